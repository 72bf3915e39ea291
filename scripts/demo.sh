#!/usr/bin/env bash
# The main job: install what is missing, build, and stream a synthetic
# Llama-shaped model through the cache (cold, disk-warm, memory-hot passes), then
# generate tokens from one in Python (scripts/sli_demo.py).
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
build/layercache demo "$@"
# The Python pass: a synthetic model generating tokens streamed layer by layer through the cache
# (layercache.sli, the installed module), tokens/s from disk, from memory and all-resident.
/usr/bin/python3 scripts/sli_demo.py
