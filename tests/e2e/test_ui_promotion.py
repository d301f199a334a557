"""A person promotes a version in the MLflow UI, in a real browser, and serving follows.

Drives headless Chromium (Debian's package) with Playwright: open the newest version's page,
set the ``production`` alias through "Edit aliases", and see serving answer from that version.
A screenshot of the model page is kept under tests/artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import ServiceFactory
from tests.helpers import run_cli, train_and_promote, wait_for_version

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Chromium flags for a closed network: no background calls home, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
    assert wait_for_version(serving.url, "2") < 30
