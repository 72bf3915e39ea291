#!/usr/bin/env bash
# Runs pytest with the test virtualenv's python (see scripts/install-python-env.sh):
#   scripts/venv-pytest.sh <pytest args...>
# The interpreter is $LAYERCACHE_TEST_PYTHON, else <repo>/.venv-test/bin/python.
# Without one: a failure when CI is set, otherwise exit 77 (ctest: skipped) saying why.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${LAYERCACHE_TEST_PYTHON:-$repo/.venv-test/bin/python}
if [ ! -x "$py" ]; then
  msg="no test virtualenv python at $py: run scripts/install-python-env.sh or set LAYERCACHE_TEST_PYTHON"
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
    echo "FAIL: $msg (CI is set)" >&2
    exit 1
  fi
  echo "SKIPPED: $msg" >&2
  exit 77
fi
exec "$py" -m pytest -q -p no:cacheprovider "$@"
