#!/usr/bin/env bash
# Creates the test virtualenv (PyPI packages pinned in python/requirements-test.txt:
# huggingface_hub, transformers, torch, ...) that the tests against real Hub clients
# run with, and prints the path of its python on the last line of stdout.
#
#   LAYERCACHE_TEST_PYTHON=/path/to/python  use that interpreter, install nothing
#                                           (e.g. an existing venv: /work/venv/bin/python)
#   LAYERCACHE_TEST_VENV=/path/to/venv      where to create the venv (default: .venv-test
#                                           in the repository, gitignored)
#
# Re-running is cheap: the venv is reused while requirements-test.txt is unchanged.
# Needs network access to PyPI only (pip retries transient failures).
set -euo pipefail
cd "$(dirname "$0")/.."
req=python/requirements-test.txt

if [ -n "${LAYERCACHE_TEST_PYTHON:-}" ]; then
  if [ ! -x "$LAYERCACHE_TEST_PYTHON" ]; then
    echo "install-python-env: LAYERCACHE_TEST_PYTHON=$LAYERCACHE_TEST_PYTHON is not an executable" >&2
    exit 1
  fi
  echo "install-python-env: using LAYERCACHE_TEST_PYTHON=$LAYERCACHE_TEST_PYTHON (nothing installed)" >&2
  echo "$LAYERCACHE_TEST_PYTHON"
  exit 0
fi

venv=${LAYERCACHE_TEST_VENV:-$PWD/.venv-test}
stamp="$venv/.layercache-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$req"; then
  echo "$venv/bin/python"
  exit 0
fi

if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  # Debian ships the venv module separately.
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi

echo "install-python-env: creating $venv from $req" >&2
rm -f "$stamp"
/usr/bin/python3 -m venv "$venv"
pip_opts=(--disable-pip-version-check --no-input --retries 10 --timeout 120)
"$venv/bin/python" -m pip install "${pip_opts[@]}" -q -r "$req" >&2
"$venv/bin/python" -c 'import huggingface_hub, transformers, torch, safetensors, pytest' >&2
cp "$req" "$stamp"
echo "$venv/bin/python"
