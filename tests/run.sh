#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
# Prepares Docker when an engine can run here (../shared/docker-offline: engine + stand-in images)
# so the Compose tests run for real; where none can, they skip and say why.
set -uo pipefail
cd "$(dirname "$0")/.."
offline=../shared/docker-offline
if [ -z "${STACK_SKIP_DOCKER:-}" ] && [ -x "$offline/ensure-engine.sh" ]; then
  if "$offline/ensure-engine.sh"; then
    "$offline/build-images.sh" || echo "tests/run.sh: building stand-in images failed; Compose tests will skip" >&2
  else
    export STACK_DOCKER_UNAVAILABLE="ensure-engine.sh found no usable Docker engine (exit $?)"
  fi
elif [ -z "${STACK_SKIP_DOCKER:-}" ]; then
  export STACK_DOCKER_UNAVAILABLE="$offline/ensure-engine.sh not found"
fi
# Two workers (TEST_WORKERS): the Compose stories on one, the rest beside them (tests/conftest.py
# groups them); the slowest tests are listed at the end so a creeping CI time shows.
.venv/bin/pytest -n "${TEST_WORKERS:-2}" --durations=20 "$@"
status=$?
if [ $status -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $status
