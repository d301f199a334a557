"""The pure parts of issue 20's guards: which artifact paths belong to a registered version,
which paths manage users and permissions, which auth headers are judged, the audit's quoting,
and which native FastAPI routes are for admins."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tracking_server import frozen_artifacts as frozen
from tracking_server.audit_text import quoted
from tracking_server.native_gate import route_kind
from tracking_server.request_rules import accepted_scheme, admin_only_path, artifact_write_target

RUN = "0123456789abcdef0123456789abcdef"
MODEL = "m-" + "a" * 32


def _version(source: str, model_id: str | None = None, name: str = "grades") -> SimpleNamespace:
    return SimpleNamespace(name=name, version="3", source=source, model_id=model_id)


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        (f"1/{RUN}/artifacts/model/MLmodel", frozen.Owner(run_id=RUN, inside=("model", "MLmodel"))),
        (f"workspaces/team/1/{RUN}/artifacts", frozen.Owner(run_id=RUN)),
        (
            f"1/models/{MODEL}/artifacts/MLmodel",
            frozen.Owner(model_id=MODEL, inside=("artifacts", "MLmodel")),
        ),
        ("1/models", frozen.Owner()),
        (f"1/{RUN}", frozen.Owner()),
    ],
)
def test_a_proxied_path_names_its_run_or_logged_model(path: str, owner: frozen.Owner) -> None:
    assert frozen.owner_of(path) == owner


@pytest.mark.parametrize(
    ("location", "sub"),
    [
        (f"runs:/{RUN}/model", ("model",)),
        (f"mlflow-artifacts:/workspaces/default/1/{RUN}/artifacts/model", ("model",)),
        (f"s3://bucket/1/{RUN}/artifacts", ()),
        (f"models:/{MODEL}", None),
        (None, None),
    ],
)
def test_where_a_versions_files_sit_inside_its_run(location: str | None, sub: object) -> None:
    assert frozen.run_subpath(location, RUN) == sub


def _search(versions: dict[str, list[SimpleNamespace]]):
    asked: list[str] = []

    def search(filter_string: str) -> list[SimpleNamespace]:
        asked.append(filter_string)
        return next((v for key, v in versions.items() if key in filter_string), [])

    return search, asked


@pytest.mark.parametrize(
    ("path", "deleting", "refused"),
    [
        (f"1/{RUN}/artifacts/model/MLmodel", False, True),  # replacing the version's file
        (f"1/{RUN}/artifacts/model/extra.pkl", False, True),  # a file beside it
        (f"1/{RUN}/artifacts", True, True),  # deleting a parent of it
        (f"1/{RUN}/artifacts/report.html", False, False),  # the run's other files
        (f"1/models/{MODEL}/artifacts/MLmodel", False, True),  # the logged model's
        ("1", True, True),  # a delete above any run: admins only
        ("1", False, False),
    ],
)
def test_writes_under_a_registered_versions_files_are_refused(
    path: str, deleting: bool, refused: bool
) -> None:
    search, _ = _search(
        {
            RUN: [_version(f"mlflow-artifacts:/1/{RUN}/artifacts/model")],
            MODEL: [_version(f"models:/{MODEL}", MODEL)],
        }
    )
    reason = frozen.protected_version(
        path, deleting=deleting, search_versions=search, source_run_of_model=lambda m: None
    )
    assert (reason is not None) == refused, reason


def test_a_logged_model_registered_elsewhere_is_found_through_its_run() -> None:
    search, asked = _search({f"run_id = '{RUN}'": [_version(f"models:/{MODEL}", MODEL)]})
    reason = frozen.protected_version(
        f"1/models/{MODEL}/artifacts/model.pkl",
        deleting=False,
        search_versions=search,
        source_run_of_model=lambda m: RUN,
    )
    assert reason is not None and "'grades' 3" in reason
    assert asked == [f"source_path LIKE '%{MODEL}%'", f"run_id = '{RUN}'"]


def test_the_workspace_comes_from_the_path_then_the_header() -> None:
    assert frozen.workspace_of("workspaces/team/1/x", "other") == "team"
    assert frozen.workspace_of("1/x", "other") == "other"
    assert frozen.workspace_of("1/x", None) == "default"


@pytest.mark.parametrize(
    ("path", "admin_only"),
    [
        ("/api/3.0/mlflow/users/permissions/grant", True),
        ("/ajax-api/3.0/mlflow/users/permissions/revoke", True),
        ("/api/2.0/mlflow/registered-models/permissions/create", True),
        ("/ajax-api/2.0/mlflow/experiments/permissions/update", True),
        ("/prefix/api/2.0/mlflow/users/create", True),
        ("/api/3.0/mlflow/roles/assign", True),
        ("/api/2.0/mlflow/users/current", False),
        ("/ajax-api/3.0/mlflow/users/current/permissions", False),
        ("/api/2.0/mlflow/users/update-password", False),
        ("/api/2.0/mlflow/registered-models/alias", False),
    ],
)
def test_user_and_permission_management_is_for_admins(path: str, admin_only: bool) -> None:
    assert admin_only_path(path) is admin_only


@pytest.mark.parametrize(
    ("header", "bearer", "accepted"),
    [
        (None, False, True),
        ("Basic dXNlcjpwdw==", False, True),
        ('Digest username="admin", nonce="x"', False, False),
        ("Bearer token", False, False),
        ("Bearer token", True, True),
        ("garbage", False, False),
        ("Basic", False, False),
    ],
)
def test_only_schemes_the_authentication_judges_are_accepted(
    header: str | None, bearer: bool, accepted: bool
) -> None:
    assert accepted_scheme(header, bearer_supported=bearer) is accepted


def test_a_multipart_upload_targets_its_folder_and_file() -> None:
    path = "/api/2.0/mlflow-artifacts/mpu/create/1/run/artifacts/model"
    view = {"artifact_path": "1/run/artifacts/model"}
    target = artifact_write_target(path, "POST", view, {"path": "MLmodel"})
    assert target == "1/run/artifacts/model/MLmodel"
    assert artifact_write_target(path, "GET", view, None) is None


def test_user_text_in_the_audit_line_cannot_break_it() -> None:
    assert quoted("grades-regressor") == "grades-regressor"
    forged = "x\nINFO allowed set_alias grades@production by promoter"
    assert "\n" not in quoted(forged) and json.loads(quoted(forged)) == forged
    assert quoted(None) == "-"


@pytest.mark.parametrize(
    ("path", "method", "kind"),
    [
        ("/api/2.0/mlflow-artifacts/artifacts/1/x", "GET", "download"),
        ("/ajax-api/2.0/mlflow-artifacts/artifacts/1/x", "PUT", "upload"),
        ("/ajax-api/3.0/mlflow/server-info", "GET", "mlflow"),
        ("/ajax-api/3.0/mlflow/assistant/config", "GET", "admin"),
        ("/ajax-api/3.0/jobs/search", "POST", "admin"),
        ("/v1/traces", "POST", "admin"),
    ],
)
def test_native_routes_other_than_artifacts_are_for_admins(
    path: str, method: str, kind: str
) -> None:
    assert route_kind(path, method) == kind
