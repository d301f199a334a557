"""The OIDC pieces that need no server: settings, groups to roles, the username claim, the
token checks (joserfc, against keys made here), and the role sync against MLflow's real auth
store on a SQLite file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from stack_common.errors import ConfigError
from tracking_server.oidc_settings import (
    AUTHORIZATION_FUNCTION,
    OidcSettings,
    groups_of,
    parse_roles,
    role_for_groups,
    username_of,
)
from tracking_server.oidc_tokens import TokenRejected, TokenVerifier, allowed_algorithms
from tracking_server.oidc_users import Disabled, RoleMissing, RoleSync
from tracking_server.roles import PERSON_ROLES, ROLES, mlflow_role_name

ISSUER = "https://idp.example.com"
ROLES_TEXT = (
    "admin=ml-admins,promoter=ml-promoters,trainer=ml-trainers|ml-interns,reader=ml-readers"
)


def settings(**env: str) -> OidcSettings:
    base = {
        "STACK_OIDC_ISSUER": ISSUER,
        "STACK_OIDC_CLIENT_ID": "stack",
        "STACK_OIDC_ROLES": ROLES_TEXT,
    }
    return OidcSettings.from_env(base | env)


def test_settings_parse_and_default() -> None:
    parsed = settings()
    assert parsed.on and parsed.audience == "stack"
    assert parsed.roles["trainer"] == {"ml-trainers", "ml-interns"}
    assert settings(STACK_OIDC_AUDIENCE="api://stack").audience == "api://stack"
    assert not OidcSettings.from_env({}).on  # unset issuer: off, nothing required
    assert "reader=ml-readers" in parsed.mapping_text()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"STACK_OIDC_ROLES": "boss=ml-admins"}, "STACK_OIDC_ROLES"),
        ({"STACK_OIDC_ROLES": "trainer"}, "STACK_OIDC_ROLES"),
        ({"STACK_OIDC_ROLES": ""}, "STACK_OIDC_ROLES"),
        ({"STACK_OIDC_CLIENT_ID": ""}, "STACK_OIDC_CLIENT_ID"),
        ({"STACK_OIDC_ISSUER": "http://idp.example.com"}, "https"),
    ],
)
def test_unusable_settings_are_one_line_naming_the_variable(env: dict, names: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(**env)
    assert names in str(refused.value) and "\n" not in str(refused.value)


def test_the_most_capable_mapped_role_wins() -> None:
    roles = parse_roles(ROLES_TEXT)
    assert role_for_groups(["ml-readers", "ml-promoters"], roles) == "promoter"
    assert role_for_groups(["staff", "ml-interns"], roles) == "trainer"
    assert role_for_groups(["ml-admins", "ml-readers"], roles) == "admin"
    assert role_for_groups(["marketing"], roles) is None
    assert role_for_groups([], roles) is None


def test_groups_and_username_claims() -> None:
    assert groups_of({"groups": "ml-readers"}, "groups") == ["ml-readers"]
    assert groups_of({"roles": ["a", "b"]}, "roles") == ["a", "b"]
    assert groups_of({}, "groups") == []
    claims = {"sub": "00u1", "email": "ann@example.com", "preferred_username": "ann"}
    assert username_of(claims, "preferred_username") == "ann"
    assert username_of(claims | {"preferred_username": " "}, "preferred_username") == (
        "ann@example.com"
    )
    assert username_of({"sub": "00u1"}, "preferred_username") == "00u1"
    assert username_of({}, "preferred_username") is None


def test_the_launcher_names_the_function_in_mlflows_ini(monkeypatch, tmp_path: Path) -> None:
    from tracking_server.auth import AuthSettings, write_config
    from tracking_server.oidc_settings import with_oidc

    auth = AuthSettings("sqlite:///x.db", "admin", "NO_PERMISSIONS")
    monkeypatch.delenv("STACK_OIDC_ISSUER", raising=False)
    assert (
        "authenticate_request_basic_auth"
        in write_config(with_oidc(auth), str(tmp_path)).read_text()
    )
    _oidc_on(monkeypatch)
    assert f"authorization_function = {AUTHORIZATION_FUNCTION}" in (
        write_config(with_oidc(auth), str(tmp_path)).read_text()
    )


class Issuer:
    """Keys and a discovery document served from memory; counts the fetches."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "one"})
        self.fetches = 0

    def fetch(self, url: str) -> Any:
        self.fetches += 1
        if url.endswith("/.well-known/openid-configuration"):
            return {"jwks_uri": f"{ISSUER}/keys"}
        return KeySet([self.key]).as_dict(private=False)

    def token(self, key: RSAKey | None = None, **claims: Any) -> str:
        key = key or self.key
        body = {"iss": ISSUER, "aud": "stack", "exp": int(time.time()) + 300, "sub": "ann"}
        return jwt.encode({"alg": "RS256", "kid": key.kid}, body | claims, key)


def test_tokens_are_checked_and_rotated_keys_fetched_once() -> None:
    issuer = Issuer()
    verifier = TokenVerifier(ISSUER, "stack", 30, fetch=issuer.fetch)
    assert verifier.claims(issuer.token())["sub"] == "ann"
    assert issuer.fetches == 2  # discovery, keys; kept afterwards
    verifier.claims(issuer.token())
    assert issuer.fetches == 2
    for bad in (
        issuer.token(exp=int(time.time()) - 120),
        issuer.token(iss="https://evil.example.com"),
        issuer.token(aud="another"),
        issuer.token(nbf=int(time.time()) + 600),
        "a.b.c",
        "",
    ):
        with pytest.raises(TokenRejected):
            verifier.claims(bad)
    # Within the leeway: accepted.
    verifier.claims(issuer.token(exp=int(time.time()) - 10))
    # The issuer rotates its key: an unknown kid refetches the set (at most once a while).
    verifier._fetched_at -= 3600
    issuer.key = RSAKey.generate_key(2048, parameters={"kid": "two"})
    assert verifier.claims(issuer.token())["sub"] == "ann"
    assert issuer.fetches == 4


def test_only_the_published_keys_algorithms_are_allowed() -> None:
    assert allowed_algorithms({"keys": [{"kty": "RSA", "alg": "RS256"}]}) == ["RS256"]
    assert "ES256" in allowed_algorithms({"keys": [{"kty": "EC"}]})
    assert allowed_algorithms({"keys": [{"kty": "oct", "alg": "none"}]}) == []
    assert allowed_algorithms({"keys": [{"kty": "RSA", "use": "enc"}]}) == []


@pytest.fixture
def auth_store(tmp_path: Path) -> Any:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    yield store
    store.engine.dispose()


def make_roles(store: Any) -> None:
    for name in PERSON_ROLES:
        if not ROLES[name].admin:
            role = store.create_role(mlflow_role_name(name), "default")
            for resource, pattern, permission in ROLES[name].permissions("1", "grades"):
                store.add_role_permission(role.id, resource, pattern, permission)


def stack_roles(store: Any, username: str) -> list[str]:
    user = store.get_user(username)
    return sorted(r.name for r in store.list_user_roles_for_workspace(user.id, "default"))


def test_a_new_person_is_made_and_the_role_follows_the_groups(auth_store: Any) -> None:
    make_roles(auth_store)
    sync = RoleSync(auth_store)
    until = time.time() + 300
    sync.apply("ann", "trainer", until)
    assert stack_roles(auth_store, "ann") == ["stack-trainer"]
    assert not auth_store.get_user("ann").is_admin
    sync.apply("ann", "promoter", until)
    assert stack_roles(auth_store, "ann") == ["stack-promoter"]
    sync.apply("ann", "admin", until)
    assert stack_roles(auth_store, "ann") == [] and auth_store.get_user("ann").is_admin
    sync.apply("ann", "reader", until)
    assert stack_roles(auth_store, "ann") == ["stack-reader"]
    assert not auth_store.get_user("ann").is_admin


def test_a_person_disabled_by_stack_users_is_refused(auth_store: Any) -> None:
    make_roles(auth_store)
    sync = RoleSync(auth_store)
    sync.apply("bob", "reader", time.time() + 300)
    # What 'stack-users disable' does: the role removed, a random password set.
    user = auth_store.get_user("bob")
    role = auth_store.get_role_by_name("default", "stack-reader")
    auth_store.unassign_role_from_user(user.id, role.id)
    auth_store.update_user("bob", password="a-new-random-password")
    with pytest.raises(Disabled, match="stack-users"):
        sync.apply("bob", "reader", time.time() + 300)
    # A job's user (direct grants, no stack role) cannot be taken over by a token either.
    auth_store.create_user("serving", "serving-password-123")
    with pytest.raises(Disabled):
        sync.apply("serving", "admin", time.time() + 300)


def test_a_missing_mlflow_role_says_which_job_makes_it(auth_store: Any) -> None:
    with pytest.raises(RoleMissing, match="create-users"):
        RoleSync(auth_store).apply("cy", "reader", time.time() + 300)


def test_oidc_without_the_auth_app_is_refused_in_one_line(monkeypatch) -> None:
    from tracking_server.oidc_settings import check_oidc

    _oidc_on(monkeypatch)
    with pytest.raises(ConfigError, match="MLFLOW_AUTH=true"):
        check_oidc(auth_on=False)
    check_oidc(auth_on=True)
    monkeypatch.delenv("STACK_OIDC_ISSUER")
    check_oidc(auth_on=False)  # off: nothing asked


def test_a_worker_skips_the_sync_only_for_the_token_it_applied(auth_store: Any) -> None:
    make_roles(auth_store)
    sync = RoleSync(auth_store)
    until = time.time() + 300
    assert sync.apply("eva", "reader", until, "token-1")  # made
    assert not sync.apply("eva", "reader", until, "token-1")  # remembered: no store write
    # Another worker moved her to promoter; a new token for reader brings her back here.
    user = auth_store.get_user("eva")
    auth_store.unassign_role_from_user(
        user.id, auth_store.get_role_by_name("default", "stack-reader").id
    )
    auth_store.assign_role_to_user(
        user.id, auth_store.get_role_by_name("default", "stack-promoter").id
    )
    assert sync.apply("eva", "reader", until, "token-2")
    assert stack_roles(auth_store, "eva") == ["stack-reader"]
    assert not RoleSync(auth_store, clock=lambda: until + 1).remembered("eva", "reader", "", "x")


def _oidc_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a server with OIDC on."""
    for name, value in {
        "STACK_OIDC_ISSUER": ISSUER,
        "STACK_OIDC_CLIENT_ID": "c",
        "STACK_OIDC_ROLES": ROLES_TEXT,
    }.items():
        monkeypatch.setenv(name, value)
