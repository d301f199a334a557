"""``tracking_server.oidc:authenticate``: MLflow's ``authorization_function`` when OIDC is on.

MLflow's basic-auth app asks one configurable function who sends each request
(``authorization_function`` in its ini, written by the launcher: tracking_server/auth.py), on the
Flask path and, through its bridge, on its FastAPI routes. With ``STACK_OIDC_ISSUER`` set this is
that function:

* ``Authorization: Basic ...``: MLflow's own password check, unchanged (the jobs' users, people
  made with stack-users);
* ``Authorization: Bearer <JWT>``: a token of the issuer, checked against its published keys
  (tracking_server/oidc_tokens.py); the person is the username claim, their stack role the one
  their groups map to (tracking_server/oidc_settings.py), made and kept up to date in MLflow's
  user store (tracking_server/oidc_users.py);
* no header, and a UI session from the sign-in (tracking_server/oidc_login.py): the same, with
  the ID token's claims kept in Flask's signed session cookie;
* anything else, or a token that does not verify: 401 (``WWW-Authenticate: Bearer
  error="invalid_token"`` for a bad token); groups that map to no role, a person stack-users
  disabled, or a token naming the bootstrap admin: 403 with one line saying why.

The answer is kept in Flask's ``g`` for the rest of the request: MLflow and the stack's hooks ask
it several times per request.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from tracking_server.oidc_settings import OidcSettings, groups_of, role_for_groups, username_of
from tracking_server.oidc_tokens import TokenRejected, TokenVerifier
from tracking_server.oidc_users import Disabled, RoleMissing, RoleSync

logger = logging.getLogger(__name__)

SESSION_KEY = "stack_oidc"
_ANSWER_KEY = "_stack_oidc_answer"


class Refused(Exception):
    """The person is known but may not in (403): the message says why, in one line."""


class Oidc:
    """One worker's OIDC state: settings, the issuer's keys, the role memory."""

    def __init__(self, settings: OidcSettings, sync: RoleSync) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.issuer_url, settings.audience, settings.leeway_s)
        self.sync = sync

    def person(self, claims: Mapping[str, Any], admin_username: str | None) -> str:
        """The MLflow user for these verified claims, their role applied; :class:`Refused`."""
        username = username_of(claims, self.settings.username_claim)
        if username is None:
            raise Refused("the token names no user (no username claim, email or sub)")
        if admin_username and username == admin_username:
            raise Refused(
                f"{username!r} is the bootstrap admin, who signs in with its password only"
            )
        groups = groups_of(claims, self.settings.groups_claim)
        role = role_for_groups(groups, self.settings.roles)
        if role is None:
            raise Refused(
                f"{username!r} is in no group that maps to a stack role (groups claim "
                f"{self.settings.groups_claim!r}); mapped: {self.settings.mapping_text()}"
            )
        until = float(claims.get("exp") or time.time() + 60)
        # Which token (or session) this is: its claims, whole (two tokens issued in the same
        # second for other groups differ; the provider's iat and exp alone would not).
        token = hashlib.sha256(json.dumps(claims, sort_keys=True, default=str).encode()).hexdigest()
        try:
            changed = self.sync.apply(username, role, until, token)
        except (Disabled, RoleMissing) as exc:
            raise Refused(str(exc)) from None
        if changed:
            _forget_rows_read_in_this_request()
        return username


@functools.cache
def current() -> Oidc:
    """This worker's :class:`Oidc` (settings read once, MLflow's auth store)."""
    from mlflow.server.auth import store

    return Oidc(OidcSettings.from_env(), RoleSync(store))


def authenticate() -> Any:
    """MLflow's ``authorization_function``: an ``Authorization`` naming the user, or a
    response (401, 403). See the module docstring."""
    from flask import g, has_app_context

    if has_app_context() and _ANSWER_KEY in g:
        return g.get(_ANSWER_KEY)
    answer = _authenticate()
    if has_app_context():
        setattr(g, _ANSWER_KEY, answer)
    return answer


def _authenticate() -> Any:
    from flask import request, session
    from mlflow.server import auth as mlflow_auth

    header = request.headers.get("Authorization", "").strip()
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        return mlflow_auth.authenticate_request_basic_auth()
    if header and scheme.lower() != "bearer":
        return mlflow_auth.make_basic_auth_response()
    oidc = current()
    if header:
        try:
            claims = oidc.verifier.claims(credentials.strip())
        except TokenRejected as exc:
            logger.info("bearer token refused: %s", exc)
            return invalid_token_response()
    else:
        claims = session.get(SESSION_KEY) or {}
        if not claims or float(claims.get("exp", 0)) <= time.time():
            return mlflow_auth.make_basic_auth_response()
    try:
        username = oidc.person(claims, _admin_username())
    except Refused as exc:
        _audit_refusal(exc, claims)
        return forbidden_response(str(exc))
    return _authorization(username)


def _forget_rows_read_in_this_request() -> None:
    """The user's row changed (admin flag): the rows this request remembered are stale, and
    MLflow's admin check must not judge it by them (tracking_server/request_memo.py)."""
    from flask import g, has_app_context

    from tracking_server.request_memo import MEMO_KEY

    if has_app_context() and g.get(MEMO_KEY) is not None:
        setattr(g, MEMO_KEY, {})


def _authorization(username: str) -> Any:
    from werkzeug.datastructures import Authorization

    return Authorization("bearer", {"username": username})


def _admin_username() -> str | None:
    from mlflow.server.auth import auth_config

    return getattr(auth_config, "admin_username", None)


def invalid_token_response() -> Any:
    from flask import make_response

    response = make_response(
        "Invalid bearer token: expired, not signed by the issuer's keys, or not for this server; "
        "get a new one from the identity provider\n"
    )
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def forbidden_response(reason: str) -> Any:
    from flask import jsonify

    response = jsonify(
        {"error_code": "PERMISSION_DENIED", "message": f"Permission denied: {reason}"}
    )
    response.status_code = 403
    return response


def _audit_refusal(exc: Exception, claims: Mapping[str, Any]) -> None:
    from flask import request

    from tracking_server.audit_text import quoted

    who = username_of(claims, current().settings.username_claim) or "anonymous"
    logging.getLogger("tracking_server.audit").info(
        "refused %s %s by %s (%s)",
        request.method,
        quoted(request.path),
        quoted(who),
        exc,
        extra={"audit": True, "action": "oidc", "user": who, "outcome": "refused", "status": 403},
    )
