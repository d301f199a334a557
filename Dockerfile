# The project's four images, one target each; build context: the repo root.
#   docker build --target tracking-server -t mlflow-stack/tracking-server .  # + create-bucket, create-users
#   docker build --target trainer -t mlflow-stack/trainer .                  # + the promoter
#   docker build --target serving -t mlflow-stack/serving .
#   docker build --target backup -t mlflow-stack/backup .
# Every target starts from the stage `base`, so the large dependency layer is one and the same
# layer in all four images by construction: the engine builds it once, pushes and pulls it once.
#
# Classic-builder compatible (DOCKER_BUILDKIT=0, no buildx here): no BuildKit-only syntax. The
# classic builder builds every stage above the target, needed or not, so the stages run from the
# cheapest to the most expensive; BuildKit (Compose's default) builds only what the target needs.
# Classic builds running at once do not share a layer none of them found in the cache: with it,
# build one target at a time (`docker compose --parallel 1 build`, `make docker-images`).
#
# One base for all: Debian trixie, pinned, because pg_dump (backup) must be at least the server's
# major version (Compose runs PostgreSQL 16; trixie's client is 17), and serving's nginx comes from
# the same release. Another base (PYTHON_IMAGE) must keep that true for the backup image.
ARG PYTHON_IMAGE=python:3.12-slim-trixie

# --- base: what every image needs -------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

# No git in the image: GIT_PYTHON_REFRESH keeps MLflow's GitPython import from warning.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

RUN groupadd --gid 10001 app \
 && useradd --create-home --no-log-init --uid 10001 --gid 10001 app

# Dependencies first, pinned by the lock: source edits do not reinstall them. Each target copies
# the source only after its own dependency layers.
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir -c requirements.lock \
      mlflow==3.17.2 scikit-learn==1.9.1 pandas==3.1.1 numpy==2.4.6 \
      click==8.5.1 tenacity==9.2.1 requests==2.34.2 setuptools==80.9.0 pydantic-settings==2.16.3 \
      prometheus-client==0.26.0 uvloop==0.23.0 httptools==0.9.0

# --- trainer: `stack-train` (the default command) and the promotion CLI `stack-registry` --------
# It needs only MLFLOW_TRACKING_URI: artifacts go through the tracking server's proxy.
FROM base AS trainer
COPY pyproject.toml ./
COPY stack_common/ stack_common/
COPY training/ training/
COPY promotion/ promotion/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && rm -rf /src

WORKDIR /home/app
USER 10001:10001
CMD ["stack-train"]

# --- serving: `stack-serve` ---------------------------------------------------------------------
# Follows models:/<MODEL_NAME>@production, caches versions, runs MLflow's scoring processes behind
# nginx on SERVING_PORT. It holds no bucket credentials: models come through the tracking
# server's artifact proxy.
FROM base AS serving

# nginx + njs front the scoring processes (serving/front.py). Not pinned: the base image is a
# build argument (Debian trixie in python:3.12-slim-trixie, bookworm in the offline stand-in), so
# one pin cannot fit both; the base release's security updates are what we want. The nginx
# folders become the app user's so nginx, started as that user, writes no alerts about them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx libnginx-mod-http-js \
 && rm -rf /var/lib/apt/lists/* \
 && chown -R 10001:10001 /var/log/nginx /var/lib/nginx

COPY pyproject.toml ./
COPY stack_common/ stack_common/
COPY serving/ serving/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && rm -rf /src \
 && install -d -o app -g app /var/cache/stack-serving

WORKDIR /home/app
USER 10001:10001
# A named volume here keeps downloaded versions across restarts (see docker-compose.yml).
ENV SERVING_CACHE_DIR=/var/cache/stack-serving \
    SERVING_HOST=0.0.0.0 \
    SERVING_PORT=8080
EXPOSE 8080
CMD ["stack-serve"]

# --- store-clients: backend store and bucket clients (not an image of its own) -----------------
# Only the tracking server (with the bucket and users jobs) and the backup talk to the database
# and the bucket; this layer, too, is one layer in both.
FROM base AS store-clients
RUN pip install --no-cache-dir -c requirements.lock \
      psycopg2-binary==2.9.13 boto3==1.44.8 google-cloud-storage==3.17.1

# --- tracking-server: the MLflow tracking server ----------------------------------------------
# PostgreSQL backend, proxied s3:// or gs:// artifacts, basic auth; also the one-shot jobs
# create-bucket and create-users.
FROM store-clients AS tracking-server
# Flask-WTF: MLflow's basic-auth app (its "auth" extra), which only the tracking server runs.
# prometheus-flask-exporter: what `mlflow server --expose-prometheus` imports (GET /metrics).
RUN pip install --no-cache-dir -c requirements.lock \
      Flask-WTF==1.3.0 prometheus-flask-exporter==0.23.2

COPY pyproject.toml ./
COPY stack_common/ stack_common/
COPY tracking_server/ tracking_server/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && rm -rf /src

WORKDIR /home/app
USER 10001:10001
ENV MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000
EXPOSE 5000
CMD ["stack-tracking-server"]

# --- backup: `stack-backup` ---------------------------------------------------------------------
# Backups of the backend store, the auth database and the artifact bucket, and their restore
# (docs/backup.md).
FROM store-clients AS backup

# pg_dump / pg_restore of the distribution (trixie: 17; the offline bookworm stand-in: 15).
# Dumps are custom-format and restored with pg_restore, which leaves out settings the server
# does not know (transaction_timeout).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml ./
COPY stack_common/ stack_common/
COPY tracking_server/ tracking_server/
COPY backup/ backup/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && rm -rf /src

# Any uid may run it (Compose: BACKUP_UID, the owner of the host's backup folder); HOME and
# scratch space on /tmp, a tmpfs under a read-only root filesystem.
WORKDIR /tmp
USER 10001:10001
ENV HOME=/tmp \
    BACKUP_DIR=/backups
ENTRYPOINT ["stack-backup"]
CMD ["list"]
