#!/usr/bin/env bash
# The pytest suite (python/tests) against the Python package as pip installs it, not the build
# tree: builds one wheel with scikit-build-core (pyproject.toml), then runs the suite twice, from
# outside the source tree:
#   1. PyPI: the test virtualenv's python (PyPI torch, numpy; scripts/install-python-env.sh) with
#      the wheel pip-installed into a target directory (`pip install --target`; the test
#      virtualenv itself is left as it is);
#   2. Debian: a virtualenv on /usr/bin/python3 with --system-site-packages (Debian's
#      python3-torch, numpy, pytest), the wheel installed with `pip install --no-deps`.
# Each run first checks that `layercache` and `torch` come from where they should.
#
#   scripts/test-python-installed.sh CLI     CLI: the layercache binary the tests run (a build's)
#
# Environment: LAYERCACHE_TEST_PYTHON (as install-python-env.sh), LAYERCACHE_PY_INSTALL_DIR
# (work directory, default build-pyinstall; the wheel's CMake build is kept there between runs),
# LAYERCACHE_PY_INSTALLED_RUNS="pypi" or "debian" (one run only). Needs scikit-build-core and pybind11 in the
# test virtualenv (python/requirements-test.txt); installs nothing from the network itself.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 PATH_TO_LAYERCACHE_CLI" >&2
  exit 2
fi
cli=$(realpath "$1")
py=${LAYERCACHE_TEST_PYTHON:-$("$repo/scripts/install-python-env.sh" | tail -n 1)}
work=$(realpath -m "${LAYERCACHE_PY_INSTALL_DIR:-$repo/build-pyinstall}")
which=${LAYERCACHE_PY_INSTALLED_RUNS:-pypi debian}
mkdir -p "$work"
rm -rf "$work/dist" "$work/pypi-site" "$work/venv-debian"

echo "=== building the wheel (pip wheel ., scikit-build-core) ===" >&2
settings=(--config-settings=build-dir="$work/skbuild")
if command -v ccache >/dev/null; then
  settings+=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
start=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip wheel --no-build-isolation --no-deps \
  --disable-pip-version-check --no-input -q -w "$work/dist" "${settings[@]}" "$repo" >&2
wheel=$(ls "$work"/dist/layercache-*.whl)
echo "built $(basename "$wheel") in $((SECONDS - start)) s" >&2

run_suite() {  # name, python, PYTHONPATH ("" for none), where layercache must come from
  local name=$1 python=$2 path=$3 prefix=$4
  echo "=== python/tests against the installed package: $name ===" >&2
  # From a directory without the sources, so that nothing is imported from the tree.
  (cd "$work" && env -u PYTHONPATH ${path:+PYTHONPATH="$path"} "$python" - "$prefix" <<'EOF'
import os, sys
import layercache, torch
where = os.path.realpath(layercache.__file__)
print(f"layercache {layercache.__version__} from {where}; torch {torch.__version__} from "
      f"{os.path.dirname(torch.__file__)}", file=sys.stderr)
if not where.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit(f"layercache was imported from {where}, not from the installation in {sys.argv[1]}")
EOF
  )
  (cd "$work" && env -u PYTHONPATH ${path:+PYTHONPATH="$path"} LAYERCACHE_CLI="$cli" \
    LAYERCACHE_SOURCE_DIR="$repo" "$python" -m pytest -q -rs -p no:cacheprovider \
    --rootdir "$repo/python/tests" "$repo/python/tests")
}

for w in $which; do
  case $w in
    pypi)
      "$py" -m pip install --disable-pip-version-check --no-input -q --no-deps --no-index \
        --target "$work/pypi-site" "$wheel" >&2
      run_suite "PyPI torch ($py)" "$py" "$work/pypi-site" "$work/pypi-site"
      ;;
    debian)
      /usr/bin/python3 -m venv --system-site-packages "$work/venv-debian"
      "$work/venv-debian/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --no-deps --no-index "$wheel" >&2
      "$work/venv-debian/bin/python" -c 'import torch, sys; sys.exit(0 if torch.__file__.startswith("/usr/lib/python3/") else "torch is not Debian'"'"'s python3-torch: " + torch.__file__)'
      run_suite "Debian python3-torch (venv --system-site-packages)" \
        "$work/venv-debian/bin/python" "" "$work/venv-debian"
      ;;
    *)
      echo "test-python-installed: LAYERCACHE_PY_INSTALLED_RUNS: unknown run $w (pypi or debian)" >&2
      exit 2
      ;;
  esac
done
echo "python/tests passed against the installed package ($which)" >&2
