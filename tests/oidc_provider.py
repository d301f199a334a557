"""A real OpenID Connect provider for tests: oidc-provider-mock on a free loopback port.

Its access tokens are opaque, but its ID tokens are JWTs signed with the keys it publishes, with
``aud`` the client id: the tests use them as bearer tokens, as Google-style identity tokens are
used. :meth:`Provider.id_token` walks the authorization-code flow over HTTP for a person with the
claims given (``PUT /users/<sub>``); :meth:`Provider.sign` signs claims of the test's choosing
with the provider's own key (expired, wrong issuer, wrong audience).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never followed: the code is read from Location


@dataclass
class Provider:
    issuer: str
    client_id: str
    key: Any  # the provider's signing key (joserfc RSAKey)

    def set_claims(self, sub: str, claims: dict[str, Any]) -> None:
        requests.put(f"{self.issuer}/users/{sub}", json=claims, timeout=10).raise_for_status()

    def id_token(self, sub: str, claims: dict[str, Any] | None = None) -> str:
        """A fresh ID token for ``sub`` (claims set first when given)."""
        if claims is not None:
            self.set_claims(sub, claims)
        params = {
            "client_id": self.client_id,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": "openid profile email",
            "state": "test",
        }
        authorize = f"{self.issuer}/oauth2/authorize"
        answer = requests.post(
            authorize, params=params, data={"sub": sub}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
        token = requests.post(
            f"{self.issuer}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": self.client_id,
                "client_secret": "any",
            },
            timeout=10,
        )
        token.raise_for_status()
        return str(token.json()["id_token"])

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """Claims signed with the provider's own key (``exp`` an hour away unless given)."""
        from joserfc import jwt

        body = {"iss": self.issuer, "aud": self.client_id, "exp": int(time.time()) + 3600}
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, **header}, body | claims, self.key)


@contextmanager
def run_provider(client_id: str) -> Iterator[Provider]:
    """The provider on 127.0.0.1 (a free port), named ``localhost`` in its issuer URL so its
    cookies never mix with the tracking server's (127.0.0.1) in a test's session."""
    import flask
    import oidc_provider_mock
    import werkzeug.serving
    from joserfc.jwk import RSAKey

    app = oidc_provider_mock.app()
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    with app.test_request_context("/"):
        app.preprocess_request()  # the provider keeps its key in a closure; its hook hands it out
        key = RSAKey.import_key(flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=True))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield Provider(f"http://localhost:{server.server_port}", client_id, key)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
