"""A team's MLflow over HTTPS, with sign-in through the company's identity provider (issue 22).

Every part is real, on loopback:
- Caddy (Debian's, its internal CA) is the HTTPS front, as in Compose's docker-compose.tls.yml.
- The stack's tracking server runs with auth and OpenID Connect.
- oidc-provider-mock is the identity provider.
- The MLflow client and ``mlflow models serve`` use bearer tokens and verify the front's
  certificate with the CA's root file only (never ``MLFLOW_TRACKING_INSECURE_TLS``).
- Headless Chromium trusts exactly the front's key.

The story:
1. Tess, in the trainers' group, logs a model and registers it with a token.
2. Pat, in the promoters' group, signs in with the browser and promotes that version in the UI.
   The version records that Pat did it.
3. Tess, signed in, is refused on ``production`` with MLflow's message.
4. On another machine, ``mlflow models serve -m models:/…@production`` serves the model with
   Tess's token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local_stack.processes import free_port, wait_until_up
from tests.helpers import CHROMIUM_ARGS, start_mlflow_models_serve
from tests.oidc_provider import Provider
from tests.oidc_stack import Signed, signed_stack
from tests.tls_front import CADDY, MISSING, TlsFront, start_tls_front

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CADDY is None, reason=MISSING),
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GROUPS = {"promoter": "ml-promoters", "trainer": "ml-trainers"}


@dataclass
class Team:
    front: TlsFront
    signed: Signed

    @property
    def model(self) -> str:
        return self.signed.model

    @property
    def provider(self) -> Provider:
        return self.signed.provider

    def token(self, person: str, role: str) -> str:
        return self.signed.token(person, GROUPS[role])

    def client_env(self, token: str) -> dict[str, str]:
        """What a teammate's machine sets: the URL, the token and the CA's root."""
        return {
            "MLFLOW_TRACKING_URI": self.front.url,
            "MLFLOW_TRACKING_TOKEN": token,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.front.ca_root),
        }


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("team-https")
    front_port = free_port()
    behind_the_front = {
        "STACK_OIDC_REDIRECT_URI": f"https://127.0.0.1:{front_port}/oidc/callback",
        "MLFLOW_SERVER_ALLOWED_HOSTS": "127.0.0.1,127.0.0.1:*,localhost,localhost:*",
    }
    with signed_stack(root, GROUPS, behind_the_front) as signed:
        front = start_tls_front(signed.url, root / "front", port=front_port, host="127.0.0.1")
        try:
            yield Team(front, signed)
        finally:
            front.stop()


def _log_and_register(team: Team, token: str) -> str:
    """Tess's notebook: a scikit-learn model logged, registered and made the challenger, over
    HTTPS, with a token."""
    script = f"""
import mlflow, numpy as np
from sklearn.linear_model import LinearRegression
mlflow.set_experiment({team.model!r})
x = np.arange(10.0).reshape(-1, 1)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        LinearRegression().fit(x, 3 * x.ravel()), name="model",
        registered_model_name={team.model!r}, input_example=x[:2],
    )
version = info.registered_model_version
mlflow.MlflowClient().set_registered_model_alias({team.model!r}, "challenger", version)
print(version)
"""
    env = os.environ | team.client_env(token)
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _set_production_in_the_ui(team: Team, person: str, version: str, shot: Path) -> str:
    """``person`` signs in with Chromium over HTTPS and sets ``production`` on ``version``; what
    the aliases dialog then says."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None
    pin = f"--ignore-certificate-errors-spki-list={team.front.leaf_spki_sha256()}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, pin])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                page.goto(f"{team.front.url}/")  # no session: to the provider's form
                page.wait_for_url(f"{team.provider.issuer}/oauth2/authorize*")
                page.fill("input[name=sub]", person)
                page.get_by_role("button", name="Authorize").click()
                page.wait_for_url(f"{team.front.url}/**")
                # Workspaces are on with auth: the UI names the workspace in the route.
                page.goto(
                    f"{team.front.url}/#/models/{team.model}/versions/{version}?workspace=default"
                )
                page.get_by_title("Edit aliases").click()
                dialog = page.get_by_role("dialog")
                dialog.get_by_role("combobox").fill("production")
                dialog.get_by_role("combobox").press("Enter")
                dialog.get_by_role("button", name="Save aliases").click()
                denied = dialog.get_by_text("Permission denied").first
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if not dialog.is_visible():
                        return "saved"
                    if denied.is_visible():
                        return denied.inner_text()
                    time.sleep(0.2)
                return "neither saved nor refused"
            finally:
                page.screenshot(path=str(shot))
        finally:
            browser.close()


def _production(team: Team, token: str) -> dict:
    answer = requests.get(
        f"{team.front.url}/api/2.0/mlflow/registered-models/alias",
        params={"name": team.model, "alias": "production"},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(team.front.ca_root),
        timeout=30,
    )
    return {"status": answer.status_code, **answer.json()}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_a_team_trains_promotes_and_serves_over_https_with_sign_in(
    team: Team, tmp_path: Path
) -> None:
    tess_token = team.token("tess", "trainer")
    version = _log_and_register(team, tess_token)

    # Tess, signed in, may not set production; Pat may, and the version says it was Pat.
    said = _set_production_in_the_ui(team, "tess", version, tmp_path / "tess.png")
    assert "Permission denied" in said, said
    assert _production(team, tess_token)["status"] == 400  # no production yet
    team.token("pat", "promoter")  # Pat's groups at the provider
    said = _set_production_in_the_ui(team, "pat", version, tmp_path / "pat.png")
    assert said == "saved", said
    production = _production(team, tess_token)["model_version"]
    assert production["version"] == version
    tags = {t["key"]: t["value"] for t in production.get("tags", [])}
    assert tags["stack.promoted_by"] == "pat", tags

    # A teammate's machine serves production with MLflow's own server and Tess's token.
    served = start_mlflow_models_serve(
        tmp_path / "teammate",
        tmp_path / "models-serve.log",
        f"models:/{team.model}@production",
        # The token, not a password; the CA's root, never MLFLOW_TRACKING_INSECURE_TLS.
        team.client_env(tess_token)
        | {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None},
    )
    try:
        wait_until_up(served, "/ping", 120)
        answer = requests.post(
            f"{served.url}/invocations",
            json={"inputs": [[2.0]]},
            timeout=30,
        )
        assert answer.status_code == 200, (tmp_path / "models-serve.log").read_text()[-3000:]
        assert abs(answer.json()["predictions"][0] - 6.0) < 1e-6
    finally:
        served.stop()
