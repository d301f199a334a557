"""Checking the artifact bucket before ``mlflow server`` starts proxying to it.

Without this check a missing bucket or wrong credentials show up only at the first upload, as an
HTTP 500 in the trainer's log. The check uses MLflow's own artifact repository classes, so it
resolves the endpoint and the credentials exactly as the server will (``MLFLOW_S3_ENDPOINT_URL``,
``AWS_*``, ``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS``...). A bucket that is
still starting (MinIO or an emulator in Compose) gets a bounded wait; a missing bucket or a
refused credential fails at once with what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from stack_common.errors import ConfigError, StackError
from tracking_server.settings import ServerSettings, bucket_name

logger = logging.getLogger(__name__)


class BucketUnreachable(StackError):
    pass


class _Transient(Exception):
    """The bucket's endpoint did not answer; worth waiting for."""


def _prefix(uri: str) -> str:
    rest = uri.split("://", 1)[1]
    return rest.split("/", 1)[1].strip("/") + "/" if "/" in rest.strip("/") else ""


def probe_s3(uri: str) -> None:
    import botocore.exceptions
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    bucket = bucket_name(uri)
    try:
        client = S3ArtifactRepository(uri)._get_s3_client()
        client.list_objects_v2(Bucket=bucket, Prefix=_prefix(uri), MaxKeys=1)
    except botocore.exceptions.NoCredentialsError:
        raise ConfigError(
            f"no AWS credentials for {uri}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or an instance/pod role)"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise ConfigError(
                f"bucket {bucket!r} does not exist at the S3 endpoint; create it or fix "
                "MLFLOW_ARTIFACTS_DESTINATION / MLFLOW_S3_ENDPOINT_URL"
            ) from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ConfigError(
                f"access to bucket {bucket!r} refused ({code}); the server's credentials need "
                "s3:ListBucket, s3:GetObject, s3:PutObject (and s3:DeleteObject) on it"
            ) from None
        if code.startswith("5") or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            raise _Transient(code) from exc
        raise
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as e:
        raise _Transient(type(e).__name__) from e


def probe_gcs(uri: str) -> None:
    from google.api_core import exceptions as gexc
    from mlflow.store.artifact.gcs_artifact_repo import GCSArtifactRepository
    from requests import RequestException

    bucket = bucket_name(uri)
    try:
        client = GCSArtifactRepository(uri).client
        # No client-side retry (its deadline is 120 s): the bounded wait below does the retrying.
        blobs = client.list_blobs(
            bucket, prefix=_prefix(uri), max_results=1, timeout=10, retry=None
        )
        next(iter(blobs), None)
    except gexc.NotFound:
        raise ConfigError(
            f"bucket {bucket!r} does not exist at the GCS endpoint; create it or fix "
            "MLFLOW_ARTIFACTS_DESTINATION / STORAGE_EMULATOR_HOST"
        ) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(
            f"access to bucket {bucket!r} refused ({exc.code}); the server's service account "
            "needs roles/storage.objectAdmin on it (GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None
    except (gexc.ServerError, gexc.RetryError, RequestException, ConnectionError) as exc:
        raise _Transient(type(exc).__name__) from exc


PROBES: dict[str, Callable[[str], None]] = {"s3": probe_s3, "gcs": probe_gcs}


def wait_for_bucket(settings: ServerSettings) -> None:
    """Fail fast on a bucket the proxy could not use; wait a bounded time for one starting."""
    probe = PROBES.get(settings.artifact_store)
    if probe is None or not settings.serve_artifacts or settings.artifacts_wait_s <= 0:
        return  # local folder, or direct mode (the server never touches the bucket)
    uri = settings.artifacts_destination
    try:
        Retrying(
            stop=stop_after_delay(settings.artifacts_wait_s),
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception_type(_Transient),
            before_sleep=before_sleep_log(logger, logging.INFO),
        )(probe, uri)
    except RetryError as exc:
        raise BucketUnreachable(
            f"artifact store {uri} not reachable after {settings.artifacts_wait_s}s "
            f"({exc.last_attempt.exception()}); check the endpoint (MLFLOW_S3_ENDPOINT_URL / "
            "STORAGE_EMULATOR_HOST) and that the bucket service is running"
        ) from None
    logger.info("artifact store %s reachable", uri)
