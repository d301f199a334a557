# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov (tests/kubernetes) in a virtualenv of its own: its pins clash with the stack's.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
SYSTEM_PACKAGES_FLAGS ?=

.PHONY: help install demo env up down backup restore test test-python upgrade-check ca-cert test-fast lint format lock lock-checkov docker-images bench clean

help:
	@echo "make demo    the whole story on this machine: track, train, register, promote, serve, predict"
	@echo "make test    install everything and run the whole test suite"
	@echo "make env     a .env for Docker Compose from .env.example, every secret random (never overwrites)"
	@echo "make up      keep the local stack running (UI http://127.0.0.1:5000, serving :8080)"
	@echo "make down    stop it (data stays in STACK_DATA_DIR, default .stack/)"
	@echo "make backup  back up the local stack into BACKUP_DIR (default backups/); prints the ID"
	@echo "make restore ID=...  put a backup back (stop the local stack first: make down)"
	@echo "make lint    ruff (check, format) and mypy"
	@echo "make docker-images  the four images from the one Dockerfile, without Compose"

$(STAMP): pyproject.toml requirements.lock scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh $(SYSTEM_PACKAGES_FLAGS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

$(CHECKOV_STAMP): requirements-checkov.lock
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.lock
	@touch $@

demo: $(STAMP)
	$(BIN)/stack-local demo

up: $(STAMP)
	$(BIN)/stack-local up

down: $(STAMP)
	$(BIN)/stack-local down

backup: $(STAMP)
	$(BIN)/stack-backup create

restore: $(STAMP)
	@test -n "$(ID)" || { echo "usage: make restore ID=<backup ID> (make backup prints it; $(BIN)/stack-backup list)"; exit 2; }
	$(BIN)/stack-backup restore $(if $(YES),--yes) $(ID)

test: $(STAMP) $(CHECKOV_STAMP)
	bash scripts/install-system-packages.sh --with-test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	bash tests/run.sh

# The root certificate of the HTTPS front's internal CA (STACK_TLS=internal), for clients:
# MLFLOW_TRACKING_SERVER_CERT_PATH=stack-ca.crt, curl --cacert stack-ca.crt (docs/security.md#tls).
ca-cert:
	docker compose -f docker-compose.yml -f docker-compose.tls.yml exec -T front \
		cat /data/caddy/pki/authorities/local/root.crt > stack-ca.crt
	@echo "wrote stack-ca.crt: give it to clients (MLFLOW_TRACKING_SERVER_CERT_PATH, curl --cacert)"

# The unit tests on another interpreter (e.g. PY=python3.12), in a throwaway virtualenv.
test-python:
	@test -n "$(PY)" || { echo "usage: make test-python PY=python3.12"; exit 2; }
	rm -rf .venv-$(PY) && $(PY) -m venv .venv-$(PY)
	.venv-$(PY)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	.venv-$(PY)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	.venv-$(PY)/bin/pytest tests/unit tests/model -q -n 2

# The tests against another MLflow before the lock changes: which internals moved, unit and
# local end-to-end tests (E2E=0: without them), in a throwaway virtualenv.
upgrade-check:
	@test -n "$(MLFLOW)" || { echo "usage: make upgrade-check MLFLOW=x.y.z [E2E=0]"; exit 2; }
	E2E=$(or $(E2E),1) bash scripts/upgrade_check.sh $(MLFLOW)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not docker" tests/unit tests/model

env:
	$(PYTHON) scripts/make_env.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(STAMP)
	@( echo "# Exact pins of every package the project installs (make lock regenerates it). Python 3.11."; \
	   $(BIN)/python -m pip freeze --exclude-editable ) > requirements.lock

lock-checkov: $(CHECKOV_STAMP)
	@( echo "# Exact pins of checkov, in its own virtualenv (.venv-checkov): its dependencies conflict with the stack's. make lock-checkov regenerates it. Python 3.11."; \
	   $(CHECKOV_VENV)/bin/python -m pip freeze ) > requirements-checkov.lock

# The four images without Compose: one Dockerfile, a target each, all on its stage `base` (so
# the dependency layer is built once and shared). Works with the classic builder too
# (DOCKER_BUILDKIT=0). Offline: PYTHON_IMAGE=local/python:3.11-slim (../shared/DOCKER-OFFLINE.md).
STACK_IMAGE_TAG ?= local
PYTHON_IMAGE    ?= python:3.12-slim-trixie
IMAGE_TARGETS   := trainer serving tracking-server backup

docker-images:
	@for target in $(IMAGE_TARGETS); do \
	  docker build --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) --target $$target \
	    -t mlflow-stack/$$target:$(STACK_IMAGE_TAG) . || exit 1; \
	done

bench: $(STAMP)
	bash scripts/install-system-packages.sh --with-test-tools
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/model_fetch.py
	$(BIN)/python bench/tracking_server.py
	$(BIN)/python bench/tracking_load.py
	$(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache
