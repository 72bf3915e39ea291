#!/usr/bin/env bash
# The GPU tier's checks on a machine with an NVIDIA GPU, in a few minutes:
# the CUDA tests and bench/gpu_bench (docs/PERFORMANCE.md, "GPU tier").
#
#   scripts/gpu-check.sh bundle   # here (no GPU needed; CUDA toolkit needed):
#                                 # builds build-gpu/ (Release, CUDA on, sm_90)
#                                 # and puts the test and bench programs with the
#                                 # shared libraries they need in build-gpu/bundle
#   scripts/gpu-check.sh run      # on the GPU machine, from the repository root:
#                                 # runs build-gpu/bundle's programs (or, when they
#                                 # cannot start there, builds them first if cmake
#                                 # and nvcc are present), writes everything to
#                                 # $OUT (default build-gpu/out)
#
# Environment: SCRATCH (a directory on the disk to measure, default
# /tmp/layercache-gpu-bench; about 5 GB), RUNS (default 5), LAYERS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
B=build-gpu
BUNDLE=$B/bundle
PROGRAMS=(tests/cuda_test tests/gpu_tier_test gpu_bench)

build() {
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAYERCACHE_CUDA=ON \
    -DLAYERCACHE_BUILD_PYTHON=OFF \
    $(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake --build "$B" -j"$(nproc)" --target cuda_test gpu_tier_test gpu_bench
}

bundle() {
  build
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/lib"
  for p in "${PROGRAMS[@]}"; do
    cp "$B/$p" "$BUNDLE/" && strip "$BUNDLE/$(basename "$p")"
  done
  # Every shared library but the C library's own, so that the programs start
  # on a machine without this one's -dev packages.
  for p in "$BUNDLE"/*_test "$BUNDLE"/gpu_bench; do
    ldd "$p" | awk '/=> \//{print $3}'
  done | sort -u | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
  du -sh "$BUNDLE"
  echo "carry $BUNDLE to the GPU machine and run: scripts/gpu-check.sh run"
}

runnable() {  # whether the bundled programs find every library
  [ -x "$BUNDLE/gpu_bench" ] || return 1
  ! LD_LIBRARY_PATH="$BUNDLE/lib" ldd "$BUNDLE/gpu_bench" "$BUNDLE/cuda_test" | grep -q 'not found'
}

run() {
  OUT=${OUT:-$B/out}
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu-check.log") 2>&1
  echo "== $(date -u +%FT%TZ) $(uname -srm)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
    --format=csv || echo "nvidia-smi failed"
  local bin
  if runnable; then
    bin=$BUNDLE
    export LD_LIBRARY_PATH="$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  else
    echo "== the bundle cannot start here; building (needs cmake, ninja, nvcc and the -dev packages)"
    LD_LIBRARY_PATH="$BUNDLE/lib" ldd "$BUNDLE/gpu_bench" 2>&1 | grep 'not found' || true
    build
    bin=$B
    mkdir -p "$B/flat" && for p in "${PROGRAMS[@]}"; do cp "$B/$p" "$B/flat/"; done
    bin=$B/flat
  fi
  local rc=0
  echo "== CUDA tests (a missing device fails here)"
  LAYERCACHE_REQUIRE_CUDA=1 "$bin/cuda_test" --gtest_output=xml:"$OUT/cuda_test.xml" || rc=1
  echo "== GPU tier logic (simulated device)"
  "$bin/gpu_tier_test" --gtest_brief=1 || rc=1
  echo "== gpu_bench"
  SCRATCH=${SCRATCH:-/tmp/layercache-gpu-bench}
  rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
  df -h "$SCRATCH" | tail -1
  findmnt -T "$SCRATCH" -o SOURCE,FSTYPE | tail -1 || true
  "$bin/gpu_bench" --dir "$SCRATCH" --runs "${RUNS:-5}" --layers "${LAYERS:-8}" | tee "$OUT/gpu_bench.txt" || rc=1
  rm -rf "$SCRATCH"
  echo "== done rc=$rc"
  return $rc
}

case $mode in
  bundle) bundle ;;
  run) run ;;
  *) echo "usage: $0 bundle|run" >&2; exit 2 ;;
esac
