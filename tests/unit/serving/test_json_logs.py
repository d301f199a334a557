"""LOG_FORMAT=json for serving: one JSON object a line, naming model and version."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from pathlib import Path

import pytest

from serving.front import log_nginx_line
from serving.pool import interpreter_env, json_logging_env
from stack_common.logs import ContextFields, JsonFormatter, json_dict_config


def capture(logger: logging.Logger, *filters: logging.Filter) -> io.StringIO:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    for f in filters:
        handler.addFilter(f)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return out


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_supervisor_lines_name_the_version_served_at_the_time() -> None:
    served = {"version": None}
    logger = logging.getLogger("test.json.supervisor")
    out = capture(logger, ContextFields(model="grades", version=lambda: served["version"]))
    logger.info("starting")
    served["version"] = "2"
    logger.warning("now serving version %s", "2")
    logger.info("explicit", extra={"version": "3"})
    first, second, third = lines(out)
    assert first["model"] == "grades" and "version" not in first
    assert {k: second[k] for k in ("level", "logger", "message", "model", "version")} == {
        "level": "WARNING",
        "logger": "test.json.supervisor",
        "message": "now serving version 2",
        "model": "grades",
        "version": "2",
    }
    assert second["time"].endswith("+00:00")
    assert third["version"] == "3"


def test_nginx_lines_keep_their_level() -> None:
    out = capture(logging.getLogger("serving.nginx"))
    log_nginx_line("2026/12/01 13:57:50 [error] 1#1: *6 client intended to send too large body")
    log_nginx_line("2026/12/01 13:57:50 [notice] 1#1: signal process started")
    log_nginx_line("nginx: [emerg] something without a time")
    found = [(line["level"], line["message"]) for line in lines(out)]
    assert found == [
        ("ERROR", "1#1: *6 client intended to send too large body"),
        ("INFO", "1#1: signal process started"),
        ("WARNING", "nginx: [emerg] something without a time"),
    ]


def test_scoring_processes_get_a_json_logging_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert json_logging_env(tmp_path, "7-1", "7") == {}
    monkeypatch.setenv("LOG_FORMAT", "json")
    env = json_logging_env(tmp_path, "7-1", "7", model_name="grades")
    # MLflow is imported in the warm interpreter before any version is known: the switch that
    # leaves its loggers to uvicorn's config is in every scoring interpreter's environment.
    assert interpreter_env()["MLFLOW_CONFIGURE_LOGGING"] == "false"
    config = json.loads(Path(env["UVICORN_LOG_CONFIG"]).read_text())
    assert config == json_dict_config("INFO", model="grades", version="7")


def test_the_scoring_config_writes_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(json_dict_config("INFO", model="grades", version="7"))
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        logging.getLogger("a.model.library").warning("from a library")
    finally:
        root.handlers[:], root.level = saved
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    found = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(f["logger"], f["message"], f["model"], f["version"]) for f in found] == [
        ("uvicorn.error", "Started server process [42]", "grades", "7"),
        ("a.model.library", "from a library", "grades", "7"),
    ]
