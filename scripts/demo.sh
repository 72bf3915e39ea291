#!/usr/bin/env bash
# The main job: install what is missing, build, and stream a synthetic
# Llama-shaped model through the cache (cold, disk-warm, memory-hot passes).
# Extra arguments go to `layercache demo` (e.g. --layers 32 --hidden 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAYERCACHE_BUILD_TESTS=OFF -DLAYERCACHE_BUILD_BENCH=OFF \
  -DLAYERCACHE_WERROR=OFF >/dev/null
cmake --build build
# Installs the CLI, the C++ library and headers, and the Python module (into
# /usr/bin/python3's site-packages) so that `layercache` and `import layercache` work.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO cmake --install build >/dev/null
exec build/layercache demo "$@"
