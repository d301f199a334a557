"""Sign-in with OpenID Connect, for real: a provider (oidc-provider-mock), the stack's launcher
running ``mlflow server`` with ``STACK_OIDC_ISSUER`` set, MLflow's Python client and HTTP.

One provider and one server for the module. People are never made by hand: a person's first
verified token makes their MLflow user, and their groups choose the MLflow role ``stack-<role>``
(made here as the create-users job makes it). The provider's ID tokens are its signed JWTs with
``aud`` the client id: they are the bearer tokens (MLFLOW_TRACKING_TOKEN).
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from mlflow.exceptions import MlflowException

from tests.helpers import CHROMIUM_ARGS, cli_env, run_cli
from tests.oidc_stack import ADMIN_PASSWORD, Signed, b64_json, signed_stack

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

GROUPS = {"promoter": "ml-promoters", "trainer": "ml-trainers", "reader": "ml-readers"}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signed]:
    with signed_stack(tmp_path_factory.mktemp("oidc"), GROUPS) as stack:
        yield stack


def test_people_work_with_their_groups_roles_through_bearer_tokens(
    signed: Signed, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = f"tess-{uuid.uuid4().hex[:6]}"
    promoter = f"pat-{uuid.uuid4().hex[:6]}"
    # The trainer logs a run with a file and registers a version, through MLflow's client.
    client = signed.client(monkeypatch, signed.token(trainer, GROUPS["trainer"], "staff"))
    run = client.create_run(signed.experiment_id)
    client.log_metric(run.info.run_id, "rmse", 1.5)
    client.log_text(run.info.run_id, "flavors: {}\n", "model/MLmodel")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        signed.model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(signed.model, "challenger", version.version)
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias(signed.model, "production", version.version)
    assert refused.value.get_http_status_code() == 403
    assert "protected" in refused.value.message

    # The promoter reads the runs and moves production.
    client = signed.client(monkeypatch, signed.token(promoter, GROUPS["promoter"]))
    [seen] = client.search_runs(
        [signed.experiment_id], filter_string=f"attributes.run_id = '{run.info.run_id}'"
    )
    assert seen.data.metrics["rmse"] == 1.5
    assert client.download_artifacts(run.info.run_id, "model/MLmodel", str(Path(signed.log.parent)))
    client.set_registered_model_alias(signed.model, "production", version.version)
    assert client.get_model_version_by_alias(signed.model, "production").version == version.version
    # ...but may not log runs: MLflow's own 403.
    with pytest.raises(MlflowException) as refused:
        client.create_run(signed.experiment_id)
    assert refused.value.get_http_status_code() == 403

    # Audit lines name the person, as they name a Basic user.
    log = signed.log.read_text()
    assert re.search(
        rf"allowed set_alias {signed.model}@production: \S+ -> {version.version} by {promoter}", log
    ), log[-3000:]
    assert re.search(rf"refused set_alias {signed.model}@production: .* by {trainer} ", log)


def test_bad_tokens_get_401(signed: Signed) -> None:
    provider = signed.provider
    person = f"bad-{uuid.uuid4().hex[:6]}"
    good = signed.token(person, GROUPS["reader"])
    assert (
        signed.get("experiments/get", good, experiment_id=signed.experiment_id).status_code == 200
    )
    header, _payload, signature = good.split(".")
    forged = provider.sign({"sub": person, "preferred_username": person, "groups": ["ml-admins"]})
    tampered = ".".join([header, forged.split(".")[1], signature])
    unsigned = ".".join([b64_json({"alg": "none", "typ": "JWT"}), forged.split(".")[1], ""])
    bad = {
        "expired": provider.sign({"sub": person, "exp": int(time.time()) - 3600}),
        "wrong issuer": provider.sign({"sub": person, "iss": "http://127.0.0.1:1"}),
        "wrong audience": provider.sign({"sub": person, "aud": "another-client"}),
        "unsigned": unsigned,
        "tampered": tampered,
        "not a JWT": "opaque-access-token",
    }
    for name, token in bad.items():
        answer = signed.get("experiments/get", token, experiment_id=signed.experiment_id)
        assert answer.status_code == 401, (name, answer.status_code, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name
    # Groups that map to no role: 403 saying which groups do.
    stranger = signed.token(f"eve-{uuid.uuid4().hex[:6]}", "marketing")
    answer = signed.get("experiments/get", stranger, experiment_id=signed.experiment_id)
    assert answer.status_code == 403
    assert "ml-promoters" in answer.json()["message"]
    # A token naming the bootstrap admin is refused: the admin signs in with its password.
    admin = signed.provider.id_token(
        "admin", {"preferred_username": "admin", "groups": ["ml-admins"]}
    )
    assert (
        signed.get("experiments/get", admin, experiment_id=signed.experiment_id).status_code == 403
    )
    # Basic credentials keep working beside the tokens.
    basic = requests.get(
        signed.api("experiments/get"),
        params={"experiment_id": signed.experiment_id},
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    assert basic.status_code == 200


def test_the_role_follows_the_groups_at_the_next_token(signed: Signed) -> None:
    person = f"rita-{uuid.uuid4().hex[:6]}"
    alias = {"name": signed.model, "alias": "previous", "version": "1"}
    as_reader = signed.token(person, GROUPS["reader"])
    headers = {"Authorization": f"Bearer {as_reader}"}
    moved = requests.post(
        signed.api("registered-models/alias"), json=alias, headers=headers, timeout=10
    )
    assert moved.status_code == 403, moved.text
    as_promoter = signed.token(
        person, GROUPS["reader"], GROUPS["promoter"]
    )  # the most capable wins
    headers = {"Authorization": f"Bearer {as_promoter}"}
    created = requests.post(
        signed.api("registered-models/alias"), json=alias, headers=headers, timeout=10
    )
    assert created.status_code in (200, 404), created.text  # 404: no version 1 yet, not a 403
    back = signed.token(person, GROUPS["reader"])
    headers = {"Authorization": f"Bearer {back}"}
    moved = requests.post(
        signed.api("registered-models/alias"), json=alias, headers=headers, timeout=10
    )
    assert moved.status_code == 403, moved.text
    # The admin flag follows too, from the very request whose token carries the change.
    users = f"{signed.url}/api/2.0/mlflow/users/get"
    for groups, status in (((GROUPS["reader"], "ml-admins"), 200), ((GROUPS["reader"],), 403)):
        headers = {"Authorization": f"Bearer {signed.token(person, *groups)}"}
        seen = requests.get(users, params={"username": person}, headers=headers, timeout=10)
        assert seen.status_code == status, (groups, seen.text)


def test_ui_sign_in_with_the_code_flow_and_pkce(signed: Signed) -> None:
    person = f"uma-{uuid.uuid4().hex[:6]}"
    signed.provider.set_claims(person, {"preferred_username": person, "groups": [GROUPS["reader"]]})
    browser = requests.Session()
    browser.headers["Accept"] = "text/html"
    home = browser.get(f"{signed.url}/", allow_redirects=False, timeout=10)
    assert home.status_code == 302 and home.headers["Location"].endswith("/oidc/login")
    login = browser.get(f"{signed.url}/oidc/login", allow_redirects=False, timeout=10)
    assert login.status_code == 302, login.text
    authorize = login.headers["Location"]
    assert authorize.startswith(signed.provider.issuer)
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    assert "state=" in authorize
    consent = browser.post(authorize, data={"sub": person}, allow_redirects=False, timeout=10)
    assert consent.status_code == 302, consent.text
    callback = consent.headers["Location"]
    assert urlsplit(callback).path == "/oidc/callback"
    back = browser.get(callback, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    cookie = back.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    me = browser.get(f"{signed.url}/ajax-api/2.0/mlflow/users/current", timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == person
    found = browser.get(
        f"{signed.url}/ajax-api/2.0/mlflow/experiments/get",
        params={"experiment_id": signed.experiment_id},
        timeout=10,
    )
    assert found.status_code == 200, found.text
    assert browser.get(f"{signed.url}/", allow_redirects=False, timeout=10).status_code == 200
    # MLflow's native FastAPI artifact routes take the session too (its bridge to the
    # authorization function): a trainer uploads with a token, the signed-in reader downloads.
    bearer = {"Authorization": f"Bearer {signed.token(f'tia-{person}', GROUPS['trainer'])}"}
    run = requests.post(
        signed.api("runs/create"),
        json={"experiment_id": signed.experiment_id},
        headers=bearer,
        timeout=10,
    )
    assert run.status_code == 200, run.text
    root = run.json()["run"]["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    note = f"{signed.url}/api/2.0/mlflow-artifacts/artifacts/{root}/note.txt"
    uploaded = requests.put(note, data=b"hello", headers=bearer, timeout=10)
    assert uploaded.status_code == 200, uploaded.text
    downloaded = browser.get(note.replace("/api/", "/ajax-api/"), timeout=10)
    assert downloaded.status_code == 200 and downloaded.content == b"hello", downloaded.text
    # A reader may not move aliases from the UI either.
    refused = browser.post(
        f"{signed.url}/ajax-api/2.0/mlflow/registered-models/alias",
        json={"name": signed.model, "alias": "production", "version": "1"},
        timeout=10,
    )
    assert refused.status_code == 403
    # A replayed callback (state used) is refused; signing out ends the session.
    assert browser.get(callback, allow_redirects=False, timeout=10).status_code == 401
    browser.get(f"{signed.url}/oidc/logout", allow_redirects=False, timeout=10)
    assert (
        browser.get(f"{signed.url}/ajax-api/2.0/mlflow/users/current", timeout=10).status_code
        == 401
    )


def test_a_person_disabled_with_stack_users_is_refused_at_the_next_request(signed: Signed) -> None:
    person = f"dan-{uuid.uuid4().hex[:6]}"
    token = signed.token(person, GROUPS["reader"])
    assert (
        signed.get("experiments/get", token, experiment_id=signed.experiment_id).status_code == 200
    )
    # The admin runs stack-users; the provider still lists the person in the readers' group.
    admin = cli_env(signed.url, signed.model, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    disabled = run_cli("tracking_server.users_cli", "disable", person, env=admin)
    assert disabled.code == 0, disabled.stderr
    for _ in range(4):  # every worker, whatever it remembered
        answer = signed.get("experiments/get", token, experiment_id=signed.experiment_id)
        assert answer.status_code == 403, answer.text
        assert "stack-users" in answer.json()["message"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_a_person_signs_in_with_a_browser_and_sees_the_ui(signed: Signed, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    person = f"una-{uuid.uuid4().hex[:6]}"
    signed.provider.set_claims(person, {"preferred_username": person, "groups": [GROUPS["reader"]]})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{signed.url}/")  # no session: sent to the provider's sign-in form
            page.wait_for_url(f"{signed.provider.issuer}/oauth2/authorize*")
            page.fill("input[name=sub]", person)
            page.get_by_role("button", name="Authorize").click()
            page.wait_for_url(f"{signed.url}/**")
            # MLflow's UI, the person's name in its sidebar (users/current answers as them).
            page.get_by_text("default").first.wait_for()
            page.get_by_text(person).first.wait_for()
            page.screenshot(path=str(tmp_path / "oidc-signed-in.png"), full_page=True)
        finally:
            browser.close()
