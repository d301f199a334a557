"""The serving model cache on a real disk: atomic entries, checksums, eviction, remembered alias.

Downloads here are plain functions that write files (or fail half-way), standing in for the
registry; ``fetch_production`` is run against a port nothing listens on, which is exactly what a
replica sees when the tracking server is down.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST

from local_stack.processes import free_port
from serving import model_source
from serving.cache import MANIFEST, ModelCache
from serving.model_source import (
    DownloadRoute,
    client_env,
    download_with_retry,
    fetch_production,
    is_transient,
)
from serving.settings import ServingSettings
from stack_common.tracking import HttpBudget
from stack_common.wait import ServerUnreachable

NAME = "grades"
URI = "http://127.0.0.1:5000"
TIMEOUT = model_source.TIMEOUT_ENV


def writer(content: bytes = b"weights", calls: list[str] | None = None):
    """A download that writes a small model folder and records that it ran."""

    def download(folder: Path) -> None:
        if calls is not None:
            calls.append(str(folder))
        (folder / "MLmodel").write_text("flavors: {}\n")
        (folder / "data").mkdir()
        (folder / "data" / "model.bin").write_bytes(content)

    return download


def never_called(folder: Path) -> None:
    raise AssertionError("the cache downloaded although the entry was there")


def partials(cache: ModelCache) -> list[Path]:
    model_dir = cache.root / NAME
    return list(model_dir.glob(".partial-*")) if model_dir.exists() else []


def fill(cache: ModelCache, versions: list[str], size: int = 100) -> None:
    for v in versions:
        cache.fetch(NAME, v, writer(bytes([int(v)]) * size))


def test_a_failed_download_leaves_no_entry_and_no_partial(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)

    def half_then_crash(folder: Path) -> None:
        (folder / "MLmodel").write_text("flavors: {}\n")
        (folder / "model.bin").write_bytes(b"x" * 1000)
        raise ConnectionError("bucket went away mid-download")

    with pytest.raises(ConnectionError):
        cache.fetch(NAME, "1", half_then_crash)
    assert not cache.entry_path(NAME, "1").exists()
    assert partials(cache) == []
    assert cache.versions(NAME) == []
    # The next attempt starts clean and succeeds.
    entry = cache.fetch(NAME, "1", writer())
    assert not entry.hit
    assert (entry.path / "data" / "model.bin").read_bytes() == b"weights"


def test_an_empty_download_is_not_an_entry(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    with pytest.raises(RuntimeError, match="produced no files"):
        cache.fetch(NAME, "1", lambda folder: None)
    assert cache.versions(NAME) == [] and partials(cache) == []


def test_entries_carry_checksums_and_a_corrupt_one_is_downloaded_again(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    calls: list[str] = []
    entry = cache.fetch(NAME, "3", writer(b"good weights", calls), source="test registry")
    manifest = (entry.path / MANIFEST).read_text()
    assert '"data/model.bin"' in manifest and "test registry" in manifest
    assert cache.verify(NAME, "3")

    (entry.path / "data" / "model.bin").write_bytes(b"bit rot!")
    assert not cache.verify(NAME, "3")
    again = cache.fetch(NAME, "3", writer(b"good weights", calls))
    assert not again.hit and len(calls) == 2
    assert (again.path / "data" / "model.bin").read_bytes() == b"good weights"

    (again.path / "data" / "model.bin").unlink()  # a missing file is corruption too
    assert not cache.verify(NAME, "3")
    (again.path / "data" / "model.bin").write_bytes(b"good weights")
    (again.path / "stray.txt").write_text("not part of the model")  # and so is an extra one
    assert not cache.verify(NAME, "3")


def test_a_restart_reuses_the_entry_without_downloading(tmp_path: Path) -> None:
    first = ModelCache(tmp_path).fetch(NAME, "5", writer(b"w" * 4096))
    assert not first.hit
    restarted = ModelCache(tmp_path)  # a new process on the same disk
    hit = restarted.fetch(NAME, "5", never_called)
    assert hit.hit and hit.path == first.path and hit.version == "5"
    assert hit.size_bytes >= 4096


def test_eviction_by_count_never_evicts_the_protected_version(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, keep_versions=2)
    fill(cache, ["1", "2", "3", "4"])
    removed = cache.evict(NAME, protect="1")  # e.g. a rollback to the oldest version
    assert removed == ["2", "3"]
    assert cache.versions(NAME) == ["1", "4"]
    assert cache.evict(NAME, protect="4") == []  # within the limit: nothing to do
    fill(cache, ["5"])
    assert cache.evict(NAME, protect="4") == ["1"]
    assert cache.versions(NAME) == ["4", "5"]


def test_eviction_by_size_keeps_what_fits_and_always_the_protected(tmp_path: Path) -> None:
    size = 10_000
    cache = ModelCache(tmp_path, keep_versions=10, max_bytes=int(2.5 * size))
    fill(cache, ["1", "2", "3"], size=size)
    assert cache.evict(NAME, protect="3") == ["1"]
    assert cache.versions(NAME) == ["2", "3"]

    tiny = ModelCache(tmp_path, keep_versions=10, max_bytes=size // 2)  # even one is too big
    assert tiny.evict(NAME, protect="2") == ["3"]
    assert tiny.versions(NAME) == ["2"]
    assert tiny.fetch(NAME, "2", never_called).hit


def test_stale_partials_are_cleaned_only_when_old(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, partial_max_age_s=3600)
    fill(cache, ["1"])
    fresh = tmp_path / NAME / ".partial-2-inflight"
    fresh.mkdir()
    (fresh / "model.bin").write_bytes(b"another process is writing this")
    stale = tmp_path / NAME / ".partial-2-crashed"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "model.bin").write_bytes(b"left by a crash")
    two_hours_ago = time.time() - 7200
    for path in (stale / "data" / "model.bin", stale / "data", stale):
        os.utime(path, (two_hours_ago, two_hours_ago))

    cache.evict(NAME, protect="1")
    assert fresh.exists(), "a download still in progress elsewhere was removed"
    assert not stale.exists()
    # A fetch cleans up as well, without touching the young one.
    os.utime(fresh / "model.bin", (two_hours_ago, two_hours_ago))
    os.utime(fresh, (two_hours_ago, two_hours_ago))
    cache.fetch(NAME, "3", writer())
    assert not fresh.exists()


def test_the_remembered_alias_survives_a_restart_and_needs_a_sound_entry(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    fill(cache, ["2"])
    cache.remember_alias(NAME, "production", "2")
    cache.remember_alias(NAME, "staging", "9")  # never downloaded
    restarted = ModelCache(tmp_path)
    assert restarted.cached_alias(NAME, "production") == "2"
    assert restarted.cached_alias(NAME, "staging") is None
    assert restarted.cached_alias(NAME, "nope") is None
    (restarted.entry_path(NAME, "2") / "MLmodel").write_text("tampered")
    assert restarted.cached_alias(NAME, "production") is None


def serving_settings(tmp_path: Path, tracking_uri: str) -> ServingSettings:
    return ServingSettings.from_env(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": NAME,
            "STACK_DATA_DIR": str(tmp_path),
            "SERVER_WAIT_SECONDS": "0.5",
        }
    )


def test_unreachable_tracking_server_falls_back_to_the_remembered_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = serving_settings(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing there
    cache = ModelCache(settings.cache_dir)
    fill(cache, ["7"])
    cache.remember_alias(NAME, "production", "7")
    with caplog.at_level(logging.INFO):
        entry = fetch_production(settings, cache)
    assert entry.hit and entry.version == "7"
    assert "starting from the cache" in caplog.text


def test_unreachable_tracking_server_and_empty_cache_is_an_error(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServerUnreachable, match="did not answer"):
        fetch_production(settings, ModelCache(settings.cache_dir))


def test_transient_download_errors_are_retried_into_a_clean_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[list[str]] = []
    through_server: list[bool] = []
    # Unset, as by default (setenv first so that monkeypatch removes it again afterwards).
    monkeypatch.setenv(model_source.PRESIGNED_ENV, "unset")
    monkeypatch.delenv(model_source.PRESIGNED_ENV)
    environ_before = dict(os.environ)

    def flaky(tracking_uri: str, name: str, version: str, folder: Path, proxied: bool) -> None:
        attempts.append(sorted(p.name for p in folder.iterdir()))
        through_server.append(proxied)
        if len(attempts) < 3:
            (folder / "half.bin").write_bytes(b"half")
            raise requests.ConnectionError("connection reset by peer")
        writer()(folder)

    monkeypatch.setattr(model_source, "download_version", flaky)
    cache = ModelCache(tmp_path)
    route = DownloadRoute()
    entry = cache.fetch(NAME, "1", lambda f: download_with_retry(URI, NAME, "1", f, 4, 0, route))
    assert attempts == [[], [], []], "an attempt saw files of the one before"
    assert not (entry.path / "half.bin").exists()
    # The first attempt follows MLflow's choice; retries go through the tracking server, and so
    # do the process's later downloads; the environment is left as it was.
    assert through_server == [False, True, True]
    cache.fetch(NAME, "2", lambda f: download_with_retry(URI, NAME, "2", f, 4, 0, route))
    assert through_server[3:] == [True]
    assert dict(os.environ) == environ_before


def test_an_operator_choice_of_presigned_downloads_is_left_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(model_source.PRESIGNED_ENV, "true")
    through_server: list[bool] = []

    def flaky(tracking_uri: str, name: str, version: str, folder: Path, proxied: bool) -> None:
        through_server.append(proxied)
        if len(through_server) < 2:
            raise requests.ConnectionError("connection reset by peer")
        writer()(folder)

    monkeypatch.setattr(model_source, "download_version", flaky)
    ModelCache(tmp_path).fetch(NAME, "1", lambda f: download_with_retry(URI, NAME, "1", f, 4, 0))
    assert through_server == [False, False]


def test_proxy_only_turns_off_presigned_downloads_in_mlflows_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards what :func:`model_source.proxy_only` relies on in the installed MLflow: with the
    variable unset, a repository decides from the capabilities it keeps."""
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
    from mlflow.utils.server_info import SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED

    monkeypatch.setenv(model_source.PRESIGNED_ENV, "unset")
    monkeypatch.delenv(model_source.PRESIGNED_ENV)
    inner = MlflowArtifactsRepository("mlflow-artifacts:/0/m", tracking_uri=URI)
    assert inner._server_capabilities is None  # not asked yet
    inner._server_capabilities = {SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED: True}  # offered
    assert inner._is_multipart_download_enabled() is True
    models_repo = SimpleNamespace(repo=inner)  # what ModelsArtifactRepository wraps
    model_source.proxy_only(models_repo)
    assert inner._is_multipart_download_enabled() is False


def test_permanent_download_errors_fail_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def missing(tracking_uri: str, name: str, version: str, folder: Path, proxied: bool) -> None:
        calls.append(1)
        raise MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST)

    monkeypatch.setattr(model_source, "download_version", missing)
    with pytest.raises(MlflowException, match="no such version"):
        ModelCache(tmp_path).fetch(
            NAME, "1", lambda f: download_with_retry(URI, NAME, "1", f, 4, 0)
        )
    assert calls == [1]
    assert partials(ModelCache(tmp_path)) == []


def test_transient_or_not() -> None:
    assert is_transient(requests.ConnectionError())
    assert is_transient(requests.ReadTimeout())
    assert is_transient(TimeoutError())
    assert is_transient(MlflowException("bucket unreachable"))  # INTERNAL_ERROR
    assert not is_transient(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_transient(MlflowException("no", error_code=PERMISSION_DENIED))
    assert not is_transient(ValueError("bug"))


def test_progress_bar_and_download_log(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.cache"):
        ModelCache(tmp_path, progress=True).fetch(
            NAME, "4", writer(b"z" * 50_000), source="http://tracking", expected_bytes=50_000
        )
    assert f"{NAME} v4" in capsys.readouterr().err  # tqdm draws on stderr
    line = next(r.getMessage() for r in caplog.records if "downloaded" in r.getMessage())
    assert "from http://tracking" in line and "MB in" in line
    ModelCache(tmp_path, progress=False).fetch(NAME, "5", writer())
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("before", "timeout"), [({}, "600"), ({TIMEOUT: "10"}, "600"), ({TIMEOUT: "900"}, "900")]
)
def test_downloads_get_a_read_timeout_long_enough_for_large_models(
    before: dict[str, str], timeout: str
) -> None:
    """Set once at start: the download's timeout, unless the operator's is longer."""
    env = {"MLFLOW_TRACKING_URI": URI, **before}
    assert client_env(ServingSettings.from_env(env), env)[TIMEOUT] == timeout


def test_registry_lookups_keep_their_own_budget_whatever_the_download_timeout() -> None:
    env = {"MLFLOW_TRACKING_URI": URI, "SERVING_DOWNLOAD_TIMEOUT_SECONDS": "1200"}
    settings = ServingSettings.from_env(env)
    assert client_env(settings, env)[TIMEOUT] == "1200"
    assert settings.registry_budget == HttpBudget(max_retries=5, backoff_factor=1, timeout_s=60)
    operator = {**env, TIMEOUT: "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    assert ServingSettings.from_env(operator).registry_budget.timeout_s == 30
    assert ServingSettings.from_env(operator).registry_budget.max_retries == 2


def test_the_operators_client_settings_win_over_the_stacks_defaults() -> None:
    env = {"MLFLOW_TRACKING_URI": URI, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    values = client_env(ServingSettings.from_env(env), env)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in values  # left as set
    assert values["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert values[model_source.PROGRESS_BAR_ENV] == "false"
