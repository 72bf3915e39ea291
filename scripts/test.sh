#!/usr/bin/env bash
# The whole test suite: a -Werror build with every test, then the same tests
# under AddressSanitizer + UndefinedBehaviorSanitizer and under ThreadSanitizer.
# The Python tests (pytest, run by ctest) run in the first build only: a
# sanitized extension would need the sanitizer runtime preloaded into python.
# Then the libFuzzer targets run for FUZZ_SECONDS (60) each (scripts/fuzz.sh).
# Set LAYERCACHE_SANITIZERS=0 / LAYERCACHE_FUZZ=0 to skip those (quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The virtualenv with the real Hub clients (huggingface_hub, transformers) that
# tests/hub_clients runs with; LAYERCACHE_TEST_PYTHON=/path/to/python reuses one.
LAYERCACHE_TEST_PYTHON=$(scripts/install-python-env.sh | tail -n 1)
export LAYERCACHE_TEST_PYTHON

jobs=$(nproc)
run_suite() {  # name, build dir, extra cmake args...
  local name=$1 dir=$2
  shift 2
  echo "=== $name ==="
  cmake -S . -B "$dir" -G Ninja -DLAYERCACHE_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 600)
}

run_suite "release build, all tests" build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
# python/tests once more against the package as pip installs it (a wheel built by
# scikit-build-core), with PyPI's torch and with Debian's python3-torch. About 8-10
# minutes on 2 cores (the wheel's build, then the suite twice); LAYERCACHE_PY_INSTALLED=0 skips it.
if [ "${LAYERCACHE_PY_INSTALLED:-1}" != "0" ]; then
  scripts/test-python-installed.sh build-test/layercache
fi
if [ "${LAYERCACHE_SANITIZERS:-1}" != "0" ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite "AddressSanitizer + UndefinedBehaviorSanitizer" build-asan \
      -DCMAKE_BUILD_TYPE=Debug -DLAYERCACHE_SANITIZE=address,undefined -DLAYERCACHE_BUILD_BENCH=OFF \
      -DLAYERCACHE_BUILD_PYTHON=OFF
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    run_suite "ThreadSanitizer" build-tsan \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAYERCACHE_SANITIZE=thread -DLAYERCACHE_BUILD_BENCH=OFF \
      -DLAYERCACHE_BUILD_PYTHON=OFF
fi
if [ "${LAYERCACHE_FUZZ:-1}" != "0" ]; then
  echo "=== libFuzzer targets, ${FUZZ_SECONDS:-60}s each ==="
  scripts/fuzz.sh
fi
echo "all test suites passed"
