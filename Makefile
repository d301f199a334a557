# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSTEM_PACKAGES_FLAGS ?=

.PHONY: help install demo up down backup restore test test-fast lint format lock docker-images bench clean

help:
	@echo "make demo    the whole story on this machine: track, train, register, promote, serve, predict"
	@echo "make test    install everything and run the whole test suite"
	@echo "make up      keep the local stack running (UI http://127.0.0.1:5000, serving :8080)"
	@echo "make down    stop it (data stays in STACK_DATA_DIR, default .stack/)"
	@echo "make backup  back up the local stack into BACKUP_DIR (default backups/); prints the ID"
	@echo "make restore ID=...  put a backup back (stop the local stack first: make down)"
	@echo "make lint    ruff"

$(STAMP): pyproject.toml requirements.lock scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh $(SYSTEM_PACKAGES_FLAGS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

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

test: $(STAMP)
	bash scripts/install-system-packages.sh --with-test-tools
	$(BIN)/ruff check .
	bash tests/run.sh

test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not docker"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(STAMP)
	@( echo "# Exact pins of every package the project installs (make lock regenerates it). Python 3.11."; \
	   $(BIN)/python -m pip freeze --exclude-editable ) > requirements.lock

bench: $(STAMP)
	bash scripts/install-system-packages.sh --with-test-tools
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/model_fetch.py
	$(BIN)/python bench/tracking_server.py
	$(BIN)/python bench/tracking_load.py
	$(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) .pytest_cache
