"""The registry's rules on their own: who may move a protected alias or hard-delete, the
configuration, the audit line, and that they reach every way MLflow has to change the registry.
The same rules against a real server: tests/e2e/test_protected_registry.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stack_common.logs import JsonFormatter
from tracking_server.stack_auth import (
    GOVERNED_METHODS,
    METRICS_ENDPOINT,
    Action,
    Attempt,
    ProtectionSettings,
    audit,
    governed_handlers,
    refusal,
    scrape_decision,
    single_flight,
)

PROTECTED = frozenset({"production", "previous"})


def decide(action: Action, alias: str | None, *, admin: bool = False, manage: bool = False):
    def can_manage() -> bool:
        return manage

    return refusal(action, alias, is_admin=admin, can_manage=can_manage, protected=PROTECTED)


@pytest.mark.parametrize("alias", ["production", "previous", "Production"])
@pytest.mark.parametrize("action", [Action.SET_ALIAS, Action.DELETE_ALIAS])
def test_only_promoters_move_protected_aliases(action: Action, alias: str) -> None:
    assert "protected" in decide(action, alias)  # EDIT (the trainer) or less
    assert decide(action, alias, manage=True) is None  # the promoter: MLflow decides
    assert decide(action, alias, admin=True) is None


@pytest.mark.parametrize("action", [Action.SET_ALIAS, Action.DELETE_ALIAS])
def test_other_aliases_are_left_to_mlflow(action: Action) -> None:
    def never() -> bool:
        raise AssertionError("no permission lookup needed for an unprotected alias")

    assert (
        refusal(action, "challenger", is_admin=False, can_manage=never, protected=PROTECTED) is None
    )


@pytest.mark.parametrize("action", [Action.DELETE_MODEL, Action.DELETE_VERSION])
def test_hard_deletes_are_for_admins_only(action: Action) -> None:
    assert "admins only" in decide(action, None, manage=True)
    assert decide(action, None, admin=True) is None


def test_protected_aliases_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ProtectionSettings().protected_aliases == PROTECTED
    monkeypatch.setenv("MLFLOW_PROTECTED_ALIASES", " Production, gold ,,")
    assert ProtectionSettings().protected_aliases == {"production", "gold"}
    monkeypatch.setenv("MLFLOW_PROTECTED_ALIASES", "")  # empty: the default
    assert ProtectionSettings().protected_aliases == PROTECTED


def test_every_governed_method_is_one_of_mlflows_registry_handlers() -> None:
    from mlflow.protos.model_registry_pb2 import ModelRegistryService
    from mlflow.server import app
    from mlflow.server.handlers import _not_implemented

    methods = {m.input_type.name for m in ModelRegistryService.DESCRIPTOR.methods}
    assert set(GOVERNED_METHODS) <= methods
    handlers = governed_handlers()
    assert _not_implemented not in handlers and len(handlers) == len(GOVERNED_METHODS)
    # The guard matches the view function a request is routed to: each one is served.
    served = set(app.view_functions.values())
    assert set(handlers) <= served


def test_graphql_cannot_change_the_registry() -> None:
    """MLflow's GraphQL mutations only search; a new one must be looked at (and guarded)."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    mutations = set(schema.graphql_schema.mutation_type.fields)
    assert mutations == {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}


def test_the_audit_line_says_who_moved_what_from_where_to_where(caplog) -> None:
    attempt = Attempt(Action.SET_ALIAS, "promoter", "grades", "production", "1", "2")
    with caplog.at_level(logging.INFO, logger="tracking_server.audit"):
        audit(attempt, 200)
        audit(Attempt(Action.DELETE_MODEL, "trainer", "grades", refused_because="admins"), 403)
        audit(attempt, 404)  # nothing changed, nothing refused: no line
    first, second = caplog.records
    assert first.getMessage() == "allowed set_alias grades@production: 1 -> 2 by promoter (200)"
    assert (
        second.getMessage() == "refused delete_registered_model grades: - -> - by trainer (admins)"
    )

    entry = json.loads(JsonFormatter().format(first))
    assert entry["logger"] == "tracking_server.audit" and entry["level"] == "INFO"
    assert entry["message"] == first.getMessage() and entry["time"].endswith("+00:00")
    assert {k: entry[k] for k in ("user", "model", "alias", "from_version", "to_version")} == {
        "user": "promoter",
        "model": "grades",
        "alias": "production",
        "from_version": "1",
        "to_version": "2",
    }
    assert entry["outcome"] == "allowed" and entry["action"] == "set_alias"


class FakeCachedCheck:
    """MLflow's ``_authenticate_cached`` in miniature: a slow check, a cache of good logins."""

    def __init__(self) -> None:
        self.checks = 0
        self.cache: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()

    def __call__(self, username: str, password: str) -> str | None:
        with self.lock:
            if (username, password) in self.cache:
                return self.cache[(username, password)]
            self.checks += 1
        time.sleep(0.2)  # the scrypt hash
        if password != "right":
            return None
        with self.lock:
            self.cache[(username, password)] = username
        return username


def test_concurrent_logins_with_the_same_password_share_one_check() -> None:
    fake = FakeCachedCheck()
    check = single_flight(fake, lambda u, p: (u, p))
    with ThreadPoolExecutor(16) as pool:
        users = list(pool.map(lambda _: check("trainer", "right"), range(16)))
    assert users == ["trainer"] * 16
    assert fake.checks == 1


def test_a_wrong_password_is_checked_every_time_and_never_let_in() -> None:
    fake = FakeCachedCheck()
    check = single_flight(fake, lambda u, p: (u, p))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: check("trainer", "wrong"), range(4)))
    assert answers == [None] * 4
    assert fake.checks == 4
    assert check("trainer", "right") == "trainer"


def test_the_scrape_only_user_reads_metrics_and_nothing_else() -> None:
    def open_paths(path: str) -> bool:
        return path == "/health"

    def decide_scrape(endpoint: str | None, method: str, path: str) -> str:
        return scrape_decision(endpoint, method, path, unprotected=open_paths)

    assert decide_scrape(METRICS_ENDPOINT, "GET", "/metrics") == "serve"
    assert decide_scrape(METRICS_ENDPOINT, "HEAD", "/metrics") == "serve"
    assert decide_scrape(METRICS_ENDPOINT, "POST", "/metrics") == "refuse"
    assert decide_scrape(None, "POST", "/metrics") == "refuse"  # Flask: method not allowed
    assert decide_scrape("search_experiments", "GET", "/api/2.0/mlflow/experiments/search") == (
        "refuse"
    )
    assert decide_scrape("health", "GET", "/health") == "open"  # MLflow's, as for anyone


def test_the_metrics_endpoint_is_the_one_mlflows_exporter_registers(tmp_path, monkeypatch) -> None:
    """The gate serves the view prometheus-flask-exporter names; a rename must fail here."""
    from flask import Flask
    from mlflow.server.prometheus_exporter import activate_prometheus_exporter

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = Flask("probe")
    activate_prometheus_exporter(app)
    [rule] = [r for r in app.url_map.iter_rules() if r.rule == "/metrics"]
    assert rule.endpoint == METRICS_ENDPOINT


def test_the_scrape_only_user_is_off_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACK_METRICS_USERNAME", raising=False)
    assert ProtectionSettings.from_env().metrics_username is None
    monkeypatch.setenv("STACK_METRICS_USERNAME", "")
    assert ProtectionSettings.from_env().metrics_username is None
    monkeypatch.setenv("STACK_METRICS_USERNAME", "prometheus")
    assert ProtectionSettings.from_env().metrics_username == "prometheus"


@pytest.mark.parametrize(
    ("alias", "status", "marked"),
    [
        ("production", 200, True),
        ("Previous", 200, True),
        ("challenger", 200, False),
        ("production", 403, False),
        ("production", 400, False),
    ],
)
def test_a_version_is_marked_promoted_only_when_a_protected_alias_moved_to_it(
    alias: str, status: int, marked: bool
) -> None:
    from tracking_server.stack_auth import Action, Attempt, promotes

    attempt = Attempt(Action.SET_ALIAS, "promoter", "m", alias, "1", "2")
    assert promotes(attempt, status, frozenset({"production", "previous"})) is marked
    deleted = Attempt(Action.DELETE_ALIAS, "promoter", "m", "production", "1")
    assert not promotes(deleted, 200, frozenset({"production"}))
