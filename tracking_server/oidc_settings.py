"""Settings of the OpenID Connect sign-in and bearer tokens (tracking_server/oidc.py).

Off unless ``STACK_OIDC_ISSUER`` is set: then nothing changes, the tracking server takes Basic
credentials only. On, it takes the issuer's signed JWTs as ``Authorization: Bearer`` tokens and
signs people in to the UI; each person's stack role follows their groups
(``STACK_OIDC_ROLES``). docs/security.md says how to set it for Okta, Entra ID, Google and
Keycloak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, field_validator

from stack_common.errors import ConfigError
from stack_common.settings import StackSettings, env
from tracking_server.roles import PERSON_ROLES

if TYPE_CHECKING:
    from tracking_server.auth import AuthSettings

# The function the launcher names in MLflow's ini as its ``authorization_function``.
AUTHORIZATION_FUNCTION = "tracking_server.oidc:authenticate"
# The most capable first: a person in several mapped groups gets the first role here.
ROLE_ORDER: tuple[str, ...] = ("admin", "promoter", "trainer", "reader")
# Seconds of clock difference tolerated on exp, nbf and iat.
DEFAULT_LEEWAY_S = 30


def parse_roles(text: str) -> dict[str, frozenset[str]]:
    """``admin=ml-admins,trainer=ml-trainers|ml-interns`` -> {role: groups}; a role may be
    named more than once (its groups add up); ConfigError naming the bad entry."""
    roles: dict[str, set[str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        role, sep, groups = (s.strip() for s in entry.partition("="))
        if not sep or not groups or role not in PERSON_ROLES:
            raise ConfigError(
                f"STACK_OIDC_ROLES entry {entry!r} is not role=group; use e.g. "
                f"'trainer=ml-trainers', roles: {', '.join(PERSON_ROLES)}"
            )
        roles.setdefault(role, set()).update(g.strip() for g in groups.split("|") if g.strip())
    return {role: frozenset(groups) for role, groups in roles.items()}


def role_for_groups(groups: Iterable[str], roles: Mapping[str, frozenset[str]]) -> str | None:
    """The most capable stack role any of these groups maps to, or None."""
    have = set(groups)
    for role in ROLE_ORDER:
        if have & roles.get(role, frozenset()):
            return role
    return None


def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups a token names: a list of strings, or one string (some IdPs send one)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return []


def username_of(claims: Mapping[str, Any], claim: str) -> str | None:
    """The person's MLflow user name: the configured claim, else ``email``, else ``sub``."""
    for name in (claim, "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class OidcSettings(StackSettings):
    """Sign-in and bearer tokens through the company's OpenID Connect provider."""

    issuer: str | None = env("STACK_OIDC_ISSUER", None)
    """The identity provider's issuer URL (https); unset: OIDC off, Basic credentials only."""
    client_id: str | None = env("STACK_OIDC_CLIENT_ID", None)
    """The tracking server's client id at the provider (UI sign-in; the default audience)."""
    client_secret: SecretStr | None = env("STACK_OIDC_CLIENT_SECRET", None)
    """The client's secret (UI sign-in; unset: a public client with PKCE only)."""
    audience_setting: str | None = env("STACK_OIDC_AUDIENCE", None)
    """The audience bearer tokens must carry; unset: the client id (ID tokens)."""
    username_claim: str = env("STACK_OIDC_USERNAME_CLAIM", "preferred_username")
    """The claim that names the person (then email, then sub)."""
    groups_claim: str = env("STACK_OIDC_GROUPS_CLAIM", "groups")
    """The claim that lists the person's groups."""
    roles: dict[str, frozenset[str]] = env("STACK_OIDC_ROLES", {})
    """Groups to stack roles: role=group,...; the most capable role wins."""
    redirect_uri: str | None = env("STACK_OIDC_REDIRECT_URI", None)
    """The callback URL registered at the provider (https://<domain>/oidc/callback)."""
    leeway_s: int = env("STACK_OIDC_LEEWAY_SECONDS", DEFAULT_LEEWAY_S, ge=0, le=300)
    """Seconds of clock difference tolerated on a token's exp and nbf."""

    @field_validator("roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        return parse_roles(value) if isinstance(value, str) else value

    @property
    def on(self) -> bool:
        return bool(self.issuer)

    @property
    def audience(self) -> str:
        return self.audience_setting or self.client_id or ""

    @property
    def issuer_url(self) -> str:
        return (self.issuer or "").rstrip("/")

    def check(self) -> None:
        if not self.on:
            return
        if not self.client_id:
            raise ConfigError(
                "STACK_OIDC_ISSUER is set but STACK_OIDC_CLIENT_ID is not; set the tracking "
                "server's client id at the provider (or unset STACK_OIDC_ISSUER)"
            )
        if not self.roles:
            raise ConfigError(
                "STACK_OIDC_ISSUER is set but STACK_OIDC_ROLES maps no group to a role; set e.g. "
                "'admin=ml-admins,promoter=ml-promoters,trainer=ml-trainers,reader=ml-readers'"
            )
        if not self.issuer_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigError(
                f"STACK_OIDC_ISSUER={self.issuer!r} is not an https:// URL; tokens would be "
                "checked against keys fetched in clear: use the provider's https issuer URL"
            )

    def mapping_text(self) -> str:
        """``role=group|group, ...``: what a refused person is told maps."""
        return ", ".join(
            f"{role}={'|'.join(sorted(self.roles[role]))}"
            for role in ROLE_ORDER
            if role in self.roles
        )


def check_oidc(*, auth_on: bool) -> None:
    """At the launcher's start: the OIDC settings are usable, and need the auth app."""
    settings = OidcSettings.from_env()
    if settings.on and not auth_on:
        raise ConfigError(
            "STACK_OIDC_ISSUER is set but authentication is off; set MLFLOW_AUTH=true (the "
            "sign-in works through MLflow's basic-auth app) or unset STACK_OIDC_ISSUER"
        )


def with_oidc(auth: AuthSettings) -> AuthSettings:
    """The auth app's settings, naming tracking_server.oidc:authenticate when OIDC is on."""
    if not OidcSettings.from_env().on:
        return auth
    return replace(auth, authorization_function=AUTHORIZATION_FUNCTION)
