"""``mlflow server --app-name stack-auth``: MLflow's basic-auth app plus the registry's own rules.

MLflow's permissions are per resource and per level (READ < USE < EDIT < MANAGE). Two things the
stack needs are finer than that, so this app adds them in front of MLflow's own checks:

* **Protected aliases** (``MLFLOW_PROTECTED_ALIASES``, default ``production,previous``): serving
  deploys whatever ``production`` points at, so only those allowed to promote (admins, or users
  with MANAGE on that registered model) may set or delete these aliases. Anyone MLflow lets
  edit the model still sets other aliases (the trainer's ``challenger``).
* **Hard deletes are for admins**: deleting a registered model or a model version destroys
  it and every alias on it for good, so no permission short of admin may do it. Runs and
  experiments keep MLflow's soft delete.
* **A scrape-only user** (``STACK_METRICS_USERNAME``, unset by default): MLflow has no
  permission for ``/metrics`` and fails closed, so only admins could scrape it. This user may
  GET ``/metrics`` and nothing else (403 on every other path but the open ones like
  ``/health``), so Prometheus never holds the admin's password (docs/monitoring.md).

Issue 20's guards sit beside these rules: registered versions' files immutable, user and
permission management for admins, unknown auth schemes answered 401, DELETE bodies JSON or
nothing (tracking_server/request_rules.py, frozen_artifacts.py), and MLflow's native FastAPI
routes for admins (tracking_server/native_gate.py). The stack's checks read a request's
parameters as MLflow's handler does (:func:`_param`), and audit lines quote user-supplied text
(tracking_server/audit_text.py).

Everything else is left to MLflow, unchanged. The checks run as a Flask ``before_request``
hook registered ahead of the one ``mlflow.server.auth.create_app`` adds, on the *view
function* a request is routed to, so every path MLflow serves the handler under (``/api``,
``/ajax-api``, any static prefix) is covered. A refusal is MLflow's JSON error for a permission
failure (403, ``error_code`` PERMISSION_DENIED, the reason in ``message``): the UI shows it in
its error box and the Python client raises it. Unauthenticated requests are not judged here:
MLflow answers them with its 401.

Under uvicorn the app returned is MLflow's, with a short lane to Flask in front
(tracking_server/flask_lane.py), the default workspace looked up once per worker
(tracking_server/default_workspace.py) and the reads MLflow's authorization repeats done once
per request (tracking_server/request_memo.py): less CPU per request, the same checks
(docs/security.md).

Every alias move and every refused attempt leaves one line on the ``tracking_server.audit``
logger, in the server's log (JSON with ``LOG_FORMAT=json``): see docs/security.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from stack_common.logs import setup_logging
from stack_common.mlflow_internals import (
    add_static_prefix,
    can_manage_registered_model,
    has_fastapi_validator,
    model_registry_store,
    wrap_cached_password_check,
)
from tracking_server import oidc_login, request_memo, server_info, version_digest
from tracking_server.audit_text import quoted
from tracking_server.default_workspace import remember_default_workspace
from tracking_server.flask_lane import with_flask_lane
from tracking_server.native_gate import native_gate_for
from tracking_server.request_rules import RequestRules, bearer_supported, refuse_unparsed_body
from tracking_server.settings import ProtectionSettings

audit_logger = logging.getLogger("tracking_server.audit")


class Action(StrEnum):
    """The registry changes these rules govern (one per MLflow request class)."""

    SET_ALIAS = "set_alias"
    DELETE_ALIAS = "delete_alias"
    DELETE_MODEL = "delete_registered_model"
    DELETE_VERSION = "delete_model_version"


# MLflow's ModelRegistryService request class name -> the action it performs. Every other
# method of the service is left to MLflow (tests/unit/tracking_server/test_stack_auth.py
# checks the list).
GOVERNED_METHODS: Mapping[str, Action] = {
    "SetRegisteredModelAlias": Action.SET_ALIAS,
    "DeleteRegisteredModelAlias": Action.DELETE_ALIAS,
    "DeleteRegisteredModel": Action.DELETE_MODEL,
    "DeleteModelVersion": Action.DELETE_VERSION,
}


# The view prometheus-flask-exporter registers for /metrics (MLflow's --expose-prometheus).
METRICS_ENDPOINT = "prometheus_metrics"
SCRAPE_METHODS = frozenset({"GET", "HEAD"})


def scrape_decision(
    endpoint: str | None, method: str, path: str, *, unprotected: Callable[[str], bool]
) -> str:
    """What the scrape-only user, once its password checked out, gets for this request:
    ``serve`` (the metrics, past MLflow's fail-closed rule), ``open`` (a path MLflow lets
    anyone read, e.g. ``/health``: left to MLflow) or ``refuse`` (403)."""
    if endpoint == METRICS_ENDPOINT and method in SCRAPE_METHODS:
        return "serve"
    if unprotected(path):
        return "open"
    return "refuse"


class ScrapeGate:
    """The Flask hook of the scrape-only user: its scrape answered here, before MLflow's hook
    (which would refuse it: no permission covers /metrics); anything else it asks refused.

    Other users' requests pass untouched, and cost one string comparison: the password is
    checked (MLflow's cached check) only when the Basic credentials name this user.
    """

    def __init__(self, username: str) -> None:
        self.username = username

    def before_request(self) -> Any:
        from flask import current_app, request
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
        from mlflow.server import auth as mlflow_auth

        credentials = request.authorization
        if credentials is None or credentials.username != self.username:
            return None
        if not _authenticated(mlflow_auth.authenticate_request()):
            return None  # a wrong password: MLflow answers 401 as always
        decision = scrape_decision(
            request.endpoint,
            request.method,
            request.path,
            unprotected=mlflow_auth.is_unprotected_route,
        )
        if decision == "serve":
            # Returning a response ends Flask's before_request chain: MLflow's hook is skipped.
            return current_app.view_functions[METRICS_ENDPOINT]()
        if decision == "open":
            return None
        raise MlflowException(
            f"Permission denied: {self.username!r} is the scrape-only user: GET /metrics only",
            error_code=PERMISSION_DENIED,
        )


def _authenticated(authorization: Any) -> bool:
    from flask import Response

    return authorization is not None and not isinstance(authorization, Response)


@dataclass(frozen=True)
class Attempt:
    """One governed request, as the audit line reports it."""

    action: Action
    user: str  # 'anonymous' when MLflow will answer 401
    model: str | None
    alias: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    refused_because: str | None = None


def refusal(
    action: Action,
    alias: str | None,
    *,
    is_admin: bool,
    can_manage: Callable[[], bool],
    protected: frozenset[str],
) -> str | None:
    """Why the stack refuses this attempt, or None to let MLflow's own rules decide.

    ``can_manage`` is only called when the answer depends on it (it costs a database read).
    """
    if is_admin:
        return None
    if action in (Action.DELETE_MODEL, Action.DELETE_VERSION):
        return "hard deletes of registered models and versions are for admins only"
    if alias is not None and alias.lower() in protected and not can_manage():
        return (
            f"alias {alias!r} is protected: only admins and users with MANAGE on the model "
            "may set or delete it"
        )
    return None


def outcome_of(status: int) -> str | None:
    """``allowed``/``refused`` for the audit line; None for errors that changed nothing."""
    if status < 400:
        return "allowed"
    if status in (401, 403):
        return "refused"
    return None


def audit(attempt: Attempt, status: int) -> None:
    """One line per alias move or refused attempt; plain deletes by admins too."""
    outcome = outcome_of(status)
    if outcome is None:
        return
    fields = {
        "audit": True,
        "action": attempt.action.value,
        "user": attempt.user,
        "model": attempt.model,
        "alias": attempt.alias,
        "from_version": attempt.from_version,
        "to_version": attempt.to_version,
        "outcome": outcome,
        "status": status,
    }
    if attempt.refused_because:
        fields["reason"] = attempt.refused_because
    # Names come from the request: quoted unless plain, so no name can forge a line.
    target = quoted(attempt.model)
    if attempt.alias is not None:
        target = f"{target}@{quoted(attempt.alias)}"
    audit_logger.info(
        "%s %s %s: %s -> %s by %s (%s)",
        outcome,
        attempt.action.value,
        target,
        quoted(attempt.from_version),
        quoted(attempt.to_version),
        quoted(attempt.user),
        attempt.refused_because or status,
        extra=fields,
    )


def governed_handlers() -> dict[Callable[..., Any], Action]:
    """MLflow's view functions for the governed request classes (whatever paths route there)."""
    from mlflow.protos import model_registry_pb2
    from mlflow.server.handlers import get_handler

    return {
        get_handler(getattr(model_registry_pb2, name)): action
        for name, action in GOVERNED_METHODS.items()
    }


class RegistryGuard:
    """The Flask hooks: judge governed requests before MLflow does, audit them after."""

    def __init__(self, protected: frozenset[str], handlers: Mapping[Callable[..., Any], Action]):
        self.protected = protected
        self.handlers = dict(handlers)

    def _action(self) -> Action | None:
        from flask import current_app, request

        if request.endpoint is None:
            return None
        view = current_app.view_functions.get(request.endpoint)
        return self.handlers.get(view) if view is not None else None

    def before_request(self) -> Any:
        from flask import Response, g
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
        from mlflow.server import auth as mlflow_auth

        action = self._action()
        if action is None:
            return None
        authorization = mlflow_auth.authenticate_request()
        authenticated = not isinstance(authorization, Response)
        username = None if isinstance(authorization, Response) else authorization.username
        # No registry read for an anonymous attempt: it is audited with what it asked.
        attempt = self._describe(action, username, look_up=authenticated)
        g.stack_attempt = attempt
        if not authenticated:
            return None  # MLflow's own hook answers 401 the way it always does
        refuse_unparsed_body()
        reason = refusal(
            action,
            attempt.alias,
            is_admin=mlflow_auth.sender_is_admin(),
            can_manage=can_manage_registered_model,
            protected=self.protected,
        )
        if reason is None:
            return None
        g.stack_attempt = replace(attempt, refused_because=reason)
        # MLflow's JSON error (as its handlers and auth validators raise it): 403 with
        # error_code PERMISSION_DENIED, which the UI shows and the clients raise with the reason.
        raise MlflowException(f"Permission denied: {reason}", error_code=PERMISSION_DENIED)

    def after_request(self, response: Any) -> Any:
        from flask import g

        attempt = g.pop("stack_attempt", None)
        if attempt is not None:
            audit(attempt, response.status_code)
            if promotes(attempt, response.status_code, self.protected):
                mark_promoted(attempt)
        return response

    def _describe(self, action: Action, username: str | None, *, look_up: bool) -> Attempt:
        """Who wants what, and where the alias points now (for ``from -> to``)."""
        name = _param("name")
        alias = _param("alias") if action in (Action.SET_ALIAS, Action.DELETE_ALIAS) else None
        version = _param("version")
        attempt = Attempt(action, username or "anonymous", name, alias)
        current = _aliased_version(name, alias) if look_up else None
        if action is Action.SET_ALIAS:
            return replace(attempt, from_version=current, to_version=version)
        if action is Action.DELETE_ALIAS:
            return replace(attempt, from_version=current)
        if action is Action.DELETE_VERSION:
            return replace(attempt, from_version=version)
        return attempt


# The version tag the server sets whenever a protected alias (production, previous) is moved to
# a version, whoever moved it and however (UI, client, stack-registry): the clean-up's retention
# rule never deletes a version promoted within its window (tracking_server/cleanup.py).
PROMOTED_AT_TAG = "stack.promoted_at"
# Beside it, who moved it: the authenticated user (a person with stack-users or sign-in), which
# the client cannot choose, unlike the promotion CLI's own ``promoted_by``.
PROMOTED_BY_TAG = "stack.promoted_by"


def promotes(attempt: Attempt, status: int, protected: frozenset[str]) -> bool:
    """Whether this request put a version behind a protected alias."""
    return (
        attempt.action is Action.SET_ALIAS
        and status < 400
        and attempt.alias is not None
        and attempt.alias.lower() in protected
        and attempt.model is not None
        and attempt.to_version is not None
    )


def mark_promoted(attempt: Attempt) -> None:
    """Tag the version with when it was promoted (milliseconds since the epoch) and by whom."""
    import time

    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.exceptions import MlflowException

    from stack_common.mlflow_internals import model_registry_store

    assert attempt.model is not None and attempt.to_version is not None
    store = model_registry_store()
    try:
        for key, value in (
            (PROMOTED_AT_TAG, str(int(time.time() * 1000))),
            (PROMOTED_BY_TAG, attempt.user),
        ):
            store.set_model_version_tag(
                attempt.model, attempt.to_version, ModelVersionTag(key, value)
            )
    except MlflowException as exc:  # the move stands; only the retention hint is missing
        logging.getLogger("tracking_server").warning(
            "could not tag %s version %s with %s: %s",
            attempt.model,
            attempt.to_version,
            PROMOTED_AT_TAG,
            exc,
        )


def _param(name: str) -> str | None:
    """A request parameter as MLflow's handler reads it (``_get_request_message``): the query
    string of a GET, the JSON body of anything else (a body that is not JSON was refused by
    :func:`refuse_unparsed_body`). MLflow's auth reads a DELETE's query string when the body
    is not JSON, and so judged one model while the handler acted on another; the stack's checks
    and audit line see what the handler will do. None when absent: MLflow answers 400."""
    from flask import request

    if request.method == "GET":
        args: Any = request.args
    else:
        body = request.get_json(silent=True) if request.is_json else None
        args = body if isinstance(body, dict) else {}
    value = (request.view_args or {}).get(name, args.get(name))
    return None if value is None or isinstance(value, dict | list) else str(value)


def _aliased_version(name: str | None, alias: str | None) -> str | None:
    from mlflow.exceptions import MlflowException

    if not name or not alias:
        return None
    try:
        return str(model_registry_store().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None  # no such model or alias: nothing to move from


# Locks that coalesce concurrent password checks of the same credentials (a fixed number, so
# memory stays bounded whatever the login attempts; two credentials sharing a stripe only wait
# for each other's check).
LOGIN_LOCK_STRIPES = 64


def single_flight(
    authenticate: Callable[[str, str], Any], cache_key: Callable[[str, str], Hashable]
) -> Callable[[str, str], Any]:
    """``authenticate`` (MLflow's cached password check), with one check per credential at a
    time.

    MLflow's credential cache forgets a password after its TTL; every request that arrives
    before the first new check has finished then runs the scrypt hash itself (~0.1-0.5 s of CPU
    each): at concurrency 32 that is seconds of stall per worker, every TTL, for one user.
    Behind the lock the first request checks and fills the cache, the others find it there. A
    wrong password is never cached, so each attempt still pays the full check.
    """
    stripes = [threading.Lock() for _ in range(LOGIN_LOCK_STRIPES)]

    def check(username: str, password: str) -> Any:
        with stripes[hash(cache_key(username, password)) % LOGIN_LOCK_STRIPES]:
            return authenticate(username, password)

    return check


def coalesce_password_checks() -> None:
    """Put :func:`single_flight` in front of MLflow's cached check (its Flask and FastAPI
    paths both look the function up in the module at call time); MLflow's own check stays,
    with one warning line, when its shape changed (stack_common/mlflow_internals.py)."""
    wrap_cached_password_check(single_flight)


def create_app(app: Any = None) -> Any:
    """The ``mlflow.app`` factory: MLflow's basic-auth app with the guard in front.

    Runs in every ``mlflow server`` worker, so it also sets up the stack's logging there
    (the launcher's own setup does not reach the workers).
    """
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app
    from mlflow.server.handlers import catch_mlflow_exception

    setup_logging(logger_name="tracking_server")
    flask_app = mlflow_flask_app if app is None else app
    settings = ProtectionSettings.from_env()
    # OIDC sign-in routes (when STACK_OIDC_ISSUER is set): answered ahead of every hook.
    oidc_login.install(flask_app)
    # First of all hooks: a scheme MLflow's check cannot judge is a 401, never a 500; user and
    # permission management for admins; registered versions' files immutable.
    rules = RequestRules(bearer_supported())
    flask_app.before_request(catch_mlflow_exception(rules.before_request))
    if settings.metrics_username:
        # Ahead of the guard's and basic-auth's hooks: the scrape is answered before them.
        gate = ScrapeGate(settings.metrics_username)
        flask_app.before_request(catch_mlflow_exception(gate.before_request))
        logging.getLogger("tracking_server").info(
            "/metrics readable by the scrape-only user %r", settings.metrics_username
        )
    guard = RegistryGuard(settings.protected_aliases, governed_handlers())
    # Registered before basic-auth's hooks: Flask runs before_request hooks in this order.
    # A failed lookup answers as MLflow's handlers do (JSON error), not with a 500.
    flask_app.before_request(catch_mlflow_exception(guard.before_request))
    flask_app.after_request(guard.after_request)
    logging.getLogger("tracking_server").info(
        "registry rules on: protected aliases %s, hard deletes for admins only",
        ", ".join(sorted(settings.protected_aliases)) or "(none)",
    )
    coalesce_password_checks()
    remember_default_workspace()
    version_digest.install(flask_app)  # the digest of a new version's files; stack.* tags
    if not settings.presigned_transfers:  # clients move artifacts through the server
        server_info.install_flask_hook(flask_app)
    app = create_basic_auth_app(flask_app)
    request_memo.install(flask_app)
    if app is flask_app:
        return app  # gunicorn or waitress: Flask alone, no ASGI layers to skip
    gate_native_routes = native_gate_for(app)
    gated = gate_native_routes(
        with_flask_lane(app, flask_app, _has_fastapi_validator, add_static_prefix("/gateway/"))
    )
    return gated if settings.presigned_transfers else server_info.presigned_off(gated)


def _has_fastapi_validator(path: str, method: str) -> bool:
    """Whether MLflow's FastAPI permission middleware judges this request itself (it skips the
    open routes, and leaves what it finds no validator for to Flask)."""
    from mlflow.server import auth as mlflow_auth

    if mlflow_auth.is_unprotected_route(path):
        return False
    return has_fastapi_validator(path, method)
