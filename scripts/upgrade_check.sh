#!/usr/bin/env bash
# `make upgrade-check MLFLOW=x.y.z [E2E=0]`: the stack's tests against another MLflow, in a
# throwaway virtualenv, before anyone changes the lock. First the internals
# (tests/unit/stack_common/test_mlflow_internals.py: every private MLflow name the stack uses,
# each test naming what moved), then the unit tests, then the local end-to-end tests (real
# servers, no Docker; E2E=0 skips them). Exit 0 only when all pass.
set -uo pipefail
cd "$(dirname "$0")/.."
version="${1:-}"
if [ -z "$version" ]; then
  echo "usage: make upgrade-check MLFLOW=x.y.z" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# The lock without MLflow's own pins; the MLflow asked for instead, with its matching parts.
grep -viE '^(mlflow|mlflow-skinny|mlflow-tracing)==' requirements.lock > "$work/requirements.txt"
echo "upgrade-check: installing MLflow $version into $work/venv"
if ! "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$work/requirements.txt" "mlflow==$version" "mlflow-skinny==$version" \
    "mlflow-tracing==$version" > "$work/pip.log" 2>&1; then
  echo "upgrade-check: MLflow $version (with mlflow-skinny and mlflow-tracing $version and the" \
       "lock's other pins) cannot be installed here: $(grep -m1 -E 'ERROR' "$work/pip.log")" >&2
  exit 2
fi
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . \
  > /dev/null
status=0
echo "upgrade-check: MLflow internals the stack relies on"
if ! "$work/venv/bin/pytest" -q -p no:cacheprovider -n 0 \
    tests/unit/stack_common/test_mlflow_internals.py > "$work/internals.log" 2>&1; then
  status=1
  echo "upgrade-check: these internals moved (stack_common/mlflow_internals.py):"
  grep -E "^(FAILED|E +AssertionError)" "$work/internals.log" | sed 's/^/  /'
else
  echo "upgrade-check: every internal is where the stack expects it"
fi
echo "upgrade-check: unit and model tests"
"$work/venv/bin/pytest" -q -p no:cacheprovider -n 2 tests/unit tests/model || status=1
if [ "${E2E:-1}" != 0 ]; then
  echo "upgrade-check: local end-to-end tests (real servers, no Docker)"
  STACK_SKIP_DOCKER=1 STACK_DOCKER_UNAVAILABLE="upgrade-check runs no Docker" \
    "$work/venv/bin/pytest" -q -p no:cacheprovider -n 2 tests/e2e || status=1
fi
echo "upgrade-check: MLflow $version: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
