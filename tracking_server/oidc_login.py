"""The UI's sign-in through the OpenID Connect provider: ``/oidc/login``, ``/oidc/callback``,
``/oidc/logout`` on MLflow's Flask app (wired by ``stack_auth.create_app`` when OIDC is on).

Authorization code flow with PKCE (S256), ``state`` and ``nonce``, by authlib's Flask client
(it keeps them in Flask's session and checks the ID token's signature, issuer, audience and nonce
against the issuer's keys). The signed-in person is kept in Flask's signed session cookie
(``MLFLOW_FLASK_SERVER_SECRET_KEY``; HttpOnly, SameSite=Lax): their username claims, groups and
the ID token's ``exp``; tracking_server/oidc.py accepts that session until then, with the same
role rules as for a bearer token.

A browser that asks for the UI (``GET /``, ``Accept: text/html``) with neither a session nor
credentials is sent to ``/oidc/login``. The three routes are answered from a ``before_request``
hook registered ahead of every other, as the scrape-only user's is: MLflow's own hook would ask
for credentials first.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tracking_server.oidc_settings import OidcSettings

logger = logging.getLogger(__name__)

LOGIN, CALLBACK, LOGOUT = "/oidc/login", "/oidc/callback", "/oidc/logout"
CLIENT_NAME = "stack"
UI_PATHS = frozenset({"/", "/index.html"})


def session_claims(userinfo: dict[str, Any], settings: OidcSettings) -> dict[str, Any]:
    """What the session keeps of the ID token: the names, the groups, its expiry."""
    kept = {
        name: userinfo[name]
        for name in (settings.username_claim, "email", "sub", settings.groups_claim, "iat", "exp")
        if name in userinfo
    }
    kept.setdefault("exp", time.time() + 3600)
    return kept


class SignIn:
    """The routes and the browser redirect (see the module docstring)."""

    def __init__(self, settings: OidcSettings) -> None:
        from authlib.integrations.flask_client import OAuth

        self.settings = settings
        self.redirect_uri = settings.redirect_uri
        self.oauth = OAuth()
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        client_kwargs = {"scope": "openid email profile", "code_challenge_method": "S256"}
        if secret is None:  # a public client: PKCE is its proof, no secret is sent
            client_kwargs["token_endpoint_auth_method"] = "none"
        self.oauth.register(
            CLIENT_NAME,
            client_id=settings.client_id,
            client_secret=secret,
            server_metadata_url=f"{settings.issuer_url}/.well-known/openid-configuration",
            client_kwargs=client_kwargs,
        )

    def install(self, flask_app: Any) -> None:
        self.oauth.init_app(flask_app)
        # Flask's defaults: HttpOnly, and no SameSite; Lax keeps the cookie off cross-site
        # POSTs (the session authenticates the UI's ajax API) and on the provider's redirect.
        if flask_app.config.get("SESSION_COOKIE_SAMESITE") is None:
            flask_app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
        flask_app.config["SESSION_COOKIE_HTTPONLY"] = True
        hooks = flask_app.before_request_funcs.setdefault(None, [])
        hooks.insert(0, self.before_request)

    def before_request(self) -> Any:
        from flask import redirect, request, session

        from tracking_server.oidc import SESSION_KEY

        path = request.path
        if path == LOGIN:
            return self.login()
        if path == CALLBACK:
            return self.callback()
        if path == LOGOUT:
            session.pop(SESSION_KEY, None)
            return redirect("/")
        if (
            request.method == "GET"
            and path in UI_PATHS
            and "text/html" in request.headers.get("Accept", "")
            and not request.headers.get("Authorization")
            and float((session.get(SESSION_KEY) or {}).get("exp", 0)) <= time.time()
        ):
            return redirect(LOGIN)
        return None

    def _client(self) -> Any:
        return self.oauth.create_client(CLIENT_NAME)

    def login(self) -> Any:
        import requests
        from flask import url_for

        redirect_uri = self.redirect_uri or url_for("oidc_callback_route", _external=True)
        try:
            return self._client().authorize_redirect(redirect_uri)
        except requests.RequestException as exc:  # the provider's discovery document
            return _unavailable(self.settings.issuer_url, exc)

    def callback(self) -> Any:
        import requests
        from authlib.integrations.base_client import OAuthError
        from flask import make_response, redirect, session

        from tracking_server.oidc import SESSION_KEY

        try:
            token = self._client().authorize_access_token()
        except requests.RequestException as exc:  # the provider's token endpoint or keys
            return _unavailable(self.settings.issuer_url, exc)
        except (OAuthError, ValueError) as exc:
            logger.info("sign-in refused: %s", exc)
            response = make_response(f"Sign-in failed: {exc}; try again at {LOGIN}\n")
            response.status_code = 401
            return response
        userinfo = dict(token.get("userinfo") or {})
        session[SESSION_KEY] = session_claims(userinfo, self.settings)
        logger.info("signed in through the provider: %s", userinfo.get("sub"))
        return redirect("/")


def _unavailable(issuer: str, exc: Exception) -> Any:
    from flask import make_response

    logger.warning("the identity provider %s did not answer: %s", issuer, exc)
    response = make_response(
        f"The identity provider {issuer} did not answer; try again later, or sign in with a "
        "password\n"
    )
    response.status_code = 503
    return response


def install(flask_app: Any) -> None:
    """Wire the sign-in into MLflow's Flask app when ``STACK_OIDC_ISSUER`` is set."""
    settings = OidcSettings.from_env()
    if not settings.on:
        return
    sign_in = SignIn(settings)
    sign_in.install(flask_app)
    # Named so url_for can build the callback URL; answered by the hook above.
    flask_app.add_url_rule(CALLBACK, "oidc_callback_route", sign_in.callback)
    logger.info(
        "OIDC sign-in on: issuer %s, roles %s", settings.issuer_url, settings.mapping_text()
    )
