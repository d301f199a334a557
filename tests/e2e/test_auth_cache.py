"""The credential cache, for real: fast logins without trusting a password longer than the TTL.

MLflow's basic-auth app hashes the password of every request (tens of milliseconds by design);
the launcher turns on MLflow's own credential cache (``MLFLOW_AUTH_CACHE_TTL_SECONDS``, default
60 s) so each worker checks a password once per TTL. The price, documented in
docs/security.md: a password changed or a user deleted through one worker is honoured by the
others only after the TTL. These tests start a real server with two workers and a 2-second TTL,
and hold it to that bound, and to never caching a wrong password as good.

Permissions are never cached across requests: the stack remembers a user's row and the
experiment only within one request (tracking_server/request_memo.py), so a revoked grant
and a withdrawn admin right hold from the very next request, on every worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local_stack.processes import free_port, start_tracking_server, wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S

pytestmark = pytest.mark.e2e

TTL_S = 2
ADMIN = ("admin", "admin-cache-secret")
# Requests per check: each on a new connection, so both workers answer some of them.
TRIES = 16


@dataclass
class Server:
    url: str

    def status(self, username: str, password: str) -> list[int]:
        """The answers to ``TRIES`` authenticated reads, each on its own connection."""
        return [
            requests.get(
                f"{self.url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=(username, password),
                timeout=30,
            ).status_code
            for _ in range(TRIES)
        ]

    def reads(self, username: str, password: str, experiment: str) -> set[int]:
        """The answers to reads of one experiment, by name and by id, on new connections."""
        api = f"{self.url}/api/2.0/mlflow/experiments"
        by_name = {"experiment_name": experiment}
        answers = set()
        for _ in range(TRIES // 2):
            named = requests.get(f"{api}/get-by-name", params=by_name, auth=ADMIN, timeout=30)
            by_id = {"experiment_id": named.json()["experiment"]["experiment_id"]}
            for path, params in (("get-by-name", by_name), ("get", by_id)):
                answer = requests.get(
                    f"{api}/{path}", params=params, auth=(username, password), timeout=30
                )
                answers.add(answer.status_code)
        return answers

    def admin(self, method: str, path: str, version: str = "2.0", **body: object) -> dict:
        answer = requests.request(
            method, f"{self.url}/api/{version}/mlflow/{path}", json=body, auth=ADMIN, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("auth-cache")
    service = start_tracking_server(
        root / "stack",
        free_port(),
        root / "tracking.log",
        {
            "MLFLOW_AUTH": "true",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "cache-flask-secret-key",
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_AUTH_CACHE_TTL_SECONDS": str(TTL_S),
            "MLFLOW_WORKERS": "2",
        },
    )
    try:
        wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
        yield Server(service.url)
    finally:
        service.stop()


def after_the_ttl() -> None:
    time.sleep(TTL_S + 1.5)


def test_a_changed_password_is_honoured_after_the_ttl(server: Server) -> None:
    server.admin("POST", "users/create", username="rotating", password="first-password-1")
    assert set(server.status("rotating", "first-password-1")) == {200}  # cached in the workers

    server.admin("PATCH", "users/update-password", username="rotating", password="second-pass-2")
    assert set(server.status("rotating", "second-pass-2")) == {200}  # the new one works at once
    after_the_ttl()
    assert set(server.status("rotating", "first-password-1")) == {401}


def test_a_deleted_user_is_shut_out_after_the_ttl(server: Server) -> None:
    server.admin("POST", "users/create", username="leaving", password="leaving-password-1")
    assert set(server.status("leaving", "leaving-password-1")) == {200}

    server.admin("DELETE", "users/delete", username="leaving")
    after_the_ttl()
    assert set(server.status("leaving", "leaving-password-1")) == {401}


def test_a_wrong_password_is_never_cached_as_good(server: Server) -> None:
    server.admin("POST", "users/create", username="careful", password="careful-password-1")
    for _ in range(3):
        assert set(server.status("careful", "careful-password-1")) == {200}
        assert set(server.status("careful", "careful-password-2")) == {401}
        assert set(server.status("careful", "")) == {401}


def test_a_revoked_grant_or_admin_right_holds_from_the_next_request(server: Server) -> None:
    created = server.admin("POST", "experiments/create", name="memo-private")
    server.admin("POST", "users/create", username="visitor", password="visitor-password-1")
    grant = {"username": "visitor", "resource_type": "experiment"}
    grant["resource_id"] = created["experiment_id"]
    visitor = ("visitor", "visitor-password-1")
    assert server.reads(*visitor, "memo-private") == {403}  # NO_PERMISSIONS by default

    server.admin("POST", "users/permissions/grant", version="3.0", permission="READ", **grant)
    assert server.reads(*visitor, "memo-private") == {200}  # at once, on both workers

    server.admin("POST", "users/permissions/revoke", version="3.0", **grant)
    assert server.reads(*visitor, "memo-private") == {403}  # no TTL: the next request

    server.admin("PATCH", "users/update-admin", username="visitor", is_admin=True)
    assert server.reads(*visitor, "memo-private") == {200}
    server.admin("PATCH", "users/update-admin", username="visitor", is_admin=False)
    assert server.reads(*visitor, "memo-private") == {403}  # admin rights gone at once
