"""Bearer tokens checked against the issuer's published keys (joserfc, no hand-written JWT).

The keys come from the issuer's discovery document (``<issuer>/.well-known/openid-configuration``,
its ``jwks_uri``), fetched once per worker and kept; a token signed with a key id the set does
not have makes one refetch (the issuer rotated its keys), at most once every ten seconds, so a
flood of forged key ids cannot turn the server into a client hammering the issuer.

A token passes when its signature verifies with one of those keys under an algorithm that key
allows (never ``none``, never an HMAC keyed with a public key), its ``iss`` is the issuer, its
``aud`` holds the expected audience, and ``exp`` / ``nbf`` hold within the leeway. Anything else
is :class:`TokenRejected`, with a reason for the server's log (never the token itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

logger = logging.getLogger(__name__)

REFETCH_INTERVAL_S = 10.0
HTTP_TIMEOUT_S = 10.0
# What each key type may sign with, when the key names no "alg" itself.
ALGORITHMS_BY_KEY_TYPE: Mapping[str, tuple[str, ...]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


class TokenRejected(Exception):
    """The token is not one this server accepts; the message says why (for the log)."""


def fetch_json(url: str) -> Any:
    import requests

    response = requests.get(url, timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def allowed_algorithms(jwks: Mapping[str, Any]) -> list[str]:
    """The signing algorithms the published keys allow (their ``alg``, else by key type)."""
    algorithms: set[str] = set()
    for key in jwks.get("keys", []):
        if key.get("use", "sig") != "sig":
            continue
        if key.get("alg"):
            algorithms.add(str(key["alg"]))
        else:
            algorithms.update(ALGORITHMS_BY_KEY_TYPE.get(str(key.get("kty")), ()))
    algorithms.discard("none")
    return sorted(algorithms)


class TokenVerifier:
    """Checks JWTs from one issuer for one audience (one per worker, thread-safe)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        leeway_s: int,
        fetch: Callable[[str], Any] = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway_s = leeway_s
        self.fetch = fetch
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._algorithms: list[str] = []
        self._fetched_at = float("-inf")

    def discovery(self) -> Mapping[str, Any]:
        return self.fetch(f"{self.issuer}/.well-known/openid-configuration")

    def _load_keys(self) -> None:
        jwks = self.fetch(str(self.discovery()["jwks_uri"]))
        self._keys = KeySet.import_key_set(jwks)
        self._algorithms = allowed_algorithms(jwks)
        self._fetched_at = self.clock()
        logger.info(
            "OIDC keys of %s: %d, algorithms %s",
            self.issuer,
            len(jwks.get("keys", [])),
            ", ".join(self._algorithms),
        )

    def _key_set(self, *, refresh: bool) -> tuple[KeySet, list[str]]:
        with self._lock:
            stale = self.clock() - self._fetched_at >= REFETCH_INTERVAL_S
            if self._keys is None or (refresh and stale):
                try:
                    self._load_keys()
                except Exception as exc:  # the issuer unreachable: no token passes meanwhile
                    if self._keys is None:
                        raise TokenRejected(f"cannot fetch the issuer's keys: {exc}") from None
                    logger.warning("could not refetch the keys of %s: %s", self.issuer, exc)
            assert self._keys is not None
            return self._keys, self._algorithms

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or :class:`TokenRejected`."""
        keys, algorithms = self._key_set(refresh=False)
        try:
            decoded = self._decode(token, keys, algorithms)
        except JoseError as exc:
            if not _unknown_key(exc):
                raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
            keys, algorithms = self._key_set(refresh=True)  # rotated keys: fetch them once
            try:
                decoded = self._decode(token, keys, algorithms)
            except (JoseError, ValueError) as again:
                raise TokenRejected(f"{type(again).__name__}: {again}") from None
        except ValueError as exc:  # not a JWT at all
            raise TokenRejected(f"not a JWT: {exc}") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway_s,
            # Some issuers (Auth0) end their iss with a slash; the setting may or may not.
            iss={"essential": True, "values": [self.issuer, f"{self.issuer}/"]},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
        return dict(decoded.claims)

    @staticmethod
    def _decode(token: str, keys: KeySet, algorithms: list[str]) -> jwt.Token:
        if not algorithms:
            raise TokenRejected("the issuer publishes no signing key")
        return jwt.decode(token, keys, algorithms=algorithms)


def _unknown_key(exc: JoseError) -> bool:
    from joserfc.errors import InvalidKeyIdError, MissingKeyError

    return isinstance(exc, InvalidKeyIdError | MissingKeyError) or "kid" in str(exc).lower()
