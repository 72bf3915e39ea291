#!/usr/bin/env bash
# The main job: install what is missing, build, and stream a synthetic
# Llama-shaped model through the cache (cold, disk-warm, memory-hot passes).
# Extra arguments go to `layercache demo` (e.g. --layers 32 --hidden 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAYERCACHE_BUILD_TESTS=OFF -DLAYERCACHE_BUILD_BENCH=OFF >/dev/null
cmake --build build --target layercache_cli
exec build/layercache demo "$@"
