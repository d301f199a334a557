"""A person promotes a version in the MLflow UI, in a real browser, and serving follows.

Drives headless Chromium (Debian's package) with Playwright: open the newest version's page,
set the ``production`` alias through "Edit aliases", and see serving answer from that version.
A screenshot of the model page is kept under tests/artifacts/. On a server with auth, the
trainer trying the same with ``production`` gets MLflow's permission-denied message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.conftest import ServiceFactory
from tests.e2e.test_security import ADMIN_PASSWORD, PASSWORDS, SERVER_SECRETS, Secured
from tests.helpers import CHROMIUM_ARGS, run_cli, train_and_promote, wait_for_version

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_setting_the_alias_in_the_ui_deploys_that_version(
    services: ServiceFactory, unique_name: str
) -> None:
    from playwright.sync_api import sync_playwright

    tracking = services.tracking()
    env = train_and_promote(tracking.url, unique_name)
    serving = services.serving(tracking.url, unique_name, env={"SERVING_POLL_SECONDS": "1"})
    wait_for_version(serving.url, "1")
    assert run_cli("training", env=env).code == 0  # version 2, not promoted yet

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{tracking.url}/#/models/{unique_name}/versions/2")
            page.get_by_title("Edit aliases").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("combobox").fill("production")
            dialog.get_by_role("combobox").press("Enter")
            dialog.get_by_role("button", name="Save aliases").click()
            dialog.wait_for(state="hidden")

            page.goto(f"{tracking.url}/#/models/{unique_name}")
            page.get_by_text("@ production").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "ui-promotion-model-page.png"), full_page=True)
        finally:
            browser.close()

    client = MlflowClient(tracking.url)
    assert client.get_model_version_by_alias(unique_name, "production").version == "2"
    wait_for_version(serving.url, "2")  # how fast: bench/serving.py, not a timed test


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_the_trainer_cannot_set_production_in_the_ui(
    services: ServiceFactory, tmp_path: Path, unique_name: str
) -> None:
    """Logged in as the trainer (EDIT on the model), the UI answers "Edit aliases" ->
    production with MLflow's permission-denied message, and nothing moves.

    Workspaces off: with them on, MLflow's UI offers a user without a workspace grant no
    workspace to browse (docs/security.md), which is beside the point here.
    """
    from playwright.sync_api import expect, sync_playwright

    # The auth server and users as in test_security.py: launcher with MLFLOW_AUTH=true, the
    # real create-users job.
    tracking = services.tracking(env=SERVER_SECRETS | {"MLFLOW_ENABLE_WORKSPACES": "false"})
    secured = Secured(tracking.url, unique_name, tmp_path, tmp_path)
    created = run_cli("tracking_server.bootstrap_users", env=secured.bootstrap_env())
    assert created.code == 0, created.stderr
    trained = run_cli("training", "--print-version", env=secured.env("trainer"))
    assert trained.code == 0, trained.stderr
    version = trained.stdout.strip()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900},
                http_credentials={"username": "trainer", "password": PASSWORDS["trainer"]},
            )
            page = context.new_page()
            try:
                page.goto(f"{secured.url}/#/models/{secured.model}/versions/{version}")
                page.get_by_title("Edit aliases").click()
                dialog = page.get_by_role("dialog")
                dialog.get_by_role("combobox").fill("production")
                dialog.get_by_role("combobox").press("Enter")
                dialog.get_by_role("button", name="Save aliases").click()
                expect(dialog.get_by_text("Permission denied").first).to_be_visible(timeout=30_000)
            finally:  # what the trainer saw, also when the test fails
                page.screenshot(path=str(ARTIFACTS / "ui-trainer-production-denied.png"))
        finally:
            browser.close()

    production = requests.get(
        secured.api("registered-models/alias"),
        params={"name": secured.model, "alias": "production"},
        auth=("admin", ADMIN_PASSWORD),
        timeout=30,
    )
    assert production.status_code == 400, production.text  # MLflow: "alias ... not found"
    assert "alias production not found" in production.text
