#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 60) from a corpus seeded with ../shared/fixtures and
# fuzz/regressions (inputs that once crashed: all must pass).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
CXX=clang++ CC=clang cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAYERCACHE_FUZZ=ON \
  -DLAYERCACHE_SANITIZE=address,undefined -DLAYERCACHE_BUILD_TESTS=OFF -DLAYERCACHE_BUILD_BENCH=OFF \
  -DLAYERCACHE_BUILD_PYTHON=OFF >/dev/null
cmake --build build-fuzz --target safetensors_fuzz index_fuzz remote_header_fuzz remote_entry_fuzz
fixtures=../shared/fixtures
for t in safetensors_fuzz index_fuzz remote_header_fuzz remote_entry_fuzz; do
  corpus=build-fuzz/corpus-$t
  mkdir -p "$corpus"
  case $t in
    safetensors_fuzz) cp "$fixtures"/safetensors/*.safetensors "$fixtures"/hub/lfs_pointer_model.safetensors "$corpus"/ ;;
    index_fuzz) cp "$fixtures"/hub/*.json "$corpus"/ ;;
    remote_header_fuzz)
      for f in "$fixtures"/safetensors/*.safetensors; do
        python3 -c "import struct,sys,os; p=sys.argv[1]; sys.stdout.buffer.write(struct.pack('<Q', os.path.getsize(p)) + open(p,'rb').read()[:100000])" "$f" \
          > "$corpus/$(basename "$f").remote"
      done ;;
    remote_entry_fuzz)
      # One byte of piece size, then a layer file (or a manifest).
      for f in "$fixtures"/safetensors/*.safetensors; do
        { printf '\x07'; cat "$f"; } > "$corpus/$(basename "$f").entry"
      done
      printf '\x01{"format":1,"digest":"0123456789abcdef0123456789abcdef","key":"m/0","id":"00ff","size":10,"chunk_bytes":4,"xxh3_64":["a","b","c"],"xxh3_128":"x"}' \
        > "$corpus/manifest.json" ;;
  esac
  if compgen -G "fuzz/regressions/$t-*" >/dev/null; then
    echo "=== $t: regressions"
    build-fuzz/fuzz/$t fuzz/regressions/$t-*
  fi
  echo "=== $t: ${seconds}s"
  build-fuzz/fuzz/$t -max_total_time="$seconds" -print_final_stats=1 -timeout=10 "$corpus" 2>&1 | tail -n 12
done
