"""``python -m tracking_server.create_bucket``: make sure the artifact bucket exists, then exit.

The one-shot job of the Compose stack, run before the tracking server starts. It reads the bucket
from ``MLFLOW_ARTIFACTS_DESTINATION`` (``s3://bucket/prefix`` or ``gs://bucket/prefix``), the
variable the tracking server itself uses, so the two cannot disagree. It is idempotent: a bucket
that already exists is left untouched.

- ``s3://`` through boto3: MinIO or any S3-compatible store when ``MLFLOW_S3_ENDPOINT_URL`` is set,
  AWS S3 when it is not (credentials from the environment, a profile or the instance role; the
  region from ``AWS_DEFAULT_REGION``).
- ``gs://`` through google-cloud-storage (``GOOGLE_APPLICATION_CREDENTIALS``; optional
  ``GOOGLE_CLOUD_PROJECT`` and ``GCS_BUCKET_LOCATION`` for a new bucket).

Network errors are retried for ``BUCKET_WAIT_SECONDS`` (default 30); any other failure ends in one
line naming the bucket and the fix, and exit status 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import click
from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_fixed,
)

from stack_common.errors import ConfigError, StackError
from stack_common.logs import setup_logging
from stack_common.settings import StackSettings, env

logger = logging.getLogger("tracking_server.create_bucket")

Outcome = Literal["created", "exists"]


class BucketSettings(StackSettings):
    """The bucket job's configuration: the tracking server's destination and store settings."""

    destination: str = env("MLFLOW_ARTIFACTS_DESTINATION", "")
    """The bucket URI to create (MLflow's artifacts destination)."""
    # How long network errors are retried (the store may still be starting).
    wait_s: float = env("BUCKET_WAIT_SECONDS", 30.0, ge=0)
    """Seconds network errors are retried while the store starts."""
    # S3: MinIO or another S3-compatible store (unset: AWS S3), and the region of a new bucket.
    s3_endpoint_url: str = env("MLFLOW_S3_ENDPOINT_URL", "")
    """An S3-compatible store's endpoint (unset: AWS S3)."""
    aws_default_region: str = env("AWS_DEFAULT_REGION", "")
    """The region of a new S3 bucket."""
    aws_region: str = env("AWS_REGION", "")
    """The region of a new S3 bucket (boto3's newer name)."""
    # GCS: the project and location of a new bucket.
    google_cloud_project: str = env("GOOGLE_CLOUD_PROJECT", "")
    """The GCP project of a new GCS bucket."""
    gcs_bucket_location: str = env("GCS_BUCKET_LOCATION", "")
    """The location of a new GCS bucket."""

    @property
    def region(self) -> str:
        return self.aws_default_region or self.aws_region


def bucket_of(destination: str) -> tuple[str, str]:
    """``("s3", "bucket")`` for ``s3://bucket/prefix``; a ConfigError for anything else."""
    scheme, sep, rest = destination.partition("://")
    bucket = rest.split("/", 1)[0]
    if not sep or scheme not in ("s3", "gs") or not bucket:
        raise ConfigError(
            f"MLFLOW_ARTIFACTS_DESTINATION={destination!r} names no bucket; "
            "set it to s3://bucket/prefix or gs://bucket/prefix"
        )
    return scheme, bucket


def ensure_s3_bucket(bucket: str, endpoint_url: str = "", region: str = "") -> Outcome:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    where = endpoint_url or "AWS S3"
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        # Path-style URLs work against MinIO and other stores without wildcard DNS.
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    s3 = boto3.session.Session(region_name=region or None).client(
        "s3", endpoint_url=endpoint_url or None, config=config
    )
    try:
        s3.head_bucket(Bucket=bucket)
        return "exists"
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            raise StackError(
                f"bucket s3://{bucket} at {where} exists but these credentials may not use it "
                "(403); use the bucket's owner credentials or pick another ARTIFACTS_BUCKET"
            ) from None
        if status != 404:
            raise

    region = region or s3.meta.region_name or ""
    kwargs = {}
    if region and region != "us-east-1":  # us-east-1 is the one region S3 refuses to be told
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "BucketAlreadyOwnedByYou":  # created meanwhile by another run of this job
            return "exists"
        if code == "BucketAlreadyExists":
            raise StackError(
                f"bucket name {bucket!r} is taken by another account at {where}; "
                "set ARTIFACTS_BUCKET to a globally unique name"
            ) from None
        raise
    return "created"


def ensure_gcs_bucket(bucket: str, project: str = "", location: str = "") -> Outcome:
    from google.api_core.exceptions import Conflict, Forbidden
    from google.cloud import storage

    client = storage.Client(project=project or None)
    try:
        if client.lookup_bucket(bucket) is not None:
            return "exists"
        client.create_bucket(bucket, location=location or None)
    except Forbidden as exc:
        raise StackError(
            f"the service account may not use or create gs://{bucket} ({exc.code}); grant it "
            "roles/storage.admin on the bucket or create the bucket yourself"
        ) from None
    except Conflict:
        if client.lookup_bucket(bucket) is not None:
            return "exists"
        raise StackError(
            f"bucket name {bucket!r} is taken by another project; "
            "set ARTIFACTS_BUCKET to a globally unique name"
        ) from None
    return "created"


def _is_network_error(exc: BaseException) -> bool:
    import requests
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    return isinstance(
        exc, EndpointConnectionError | ConnectionClosedError | requests.ConnectionError
    )


def ensure_bucket(environ: Mapping[str, str] | None = None) -> tuple[str, Outcome]:
    """Create the bucket of MLFLOW_ARTIFACTS_DESTINATION if needed: ``("s3://b", outcome)``.

    ``environ``: where the settings come from (default: this process's environment).
    """
    settings = BucketSettings.from_env(environ)
    scheme, bucket = bucket_of(settings.destination)
    wait_s = settings.wait_s
    attempt: Callable[[], Outcome]
    if scheme == "s3":
        where = settings.s3_endpoint_url or "AWS S3"

        def attempt() -> Outcome:
            return ensure_s3_bucket(bucket, settings.s3_endpoint_url, settings.region)
    else:
        where = "Google Cloud Storage"

        def attempt() -> Outcome:
            return ensure_gcs_bucket(
                bucket, settings.google_cloud_project, settings.gcs_bucket_location
            )

    try:
        outcome = Retrying(
            stop=stop_after_delay(wait_s),
            wait=wait_fixed(1),
            retry=retry_if_exception(_is_network_error),
            before_sleep=before_sleep_log(logger, logging.INFO),
        )(attempt)
    except RetryError as exc:
        raise StackError(
            f"{where} did not answer within {wait_s:g}s ({exc.last_attempt.exception()}); "
            "check MLFLOW_S3_ENDPOINT_URL or the network, and that the store is running"
        ) from None
    return f"{scheme}://{bucket}", outcome


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Create the bucket of MLFLOW_ARTIFACTS_DESTINATION unless it exists (see .env.example)."""
    setup_logging()
    try:
        url, outcome = ensure_bucket()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # a store's own error: one line, not a traceback
        logger.debug("bucket creation failed", exc_info=True)
        raise click.ClickException(f"creating the artifact bucket failed: {exc}") from exc
    click.echo(f"bucket {url}: {'created' if outcome == 'created' else 'already exists'}")


if __name__ == "__main__":
    main()
