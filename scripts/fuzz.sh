#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and, for each target:
#   1. replays fuzz/regressions/<target>-* (inputs that once crashed: all must pass);
#   2. replays the committed corpus fuzz/corpus/<target>/ (every input must pass);
#   3. fuzzes for FUZZ_SECONDS (default 60; at least 60 when CI is set) from a
#      working corpus in build-fuzz/corpus-<target>: the committed corpus, the
#      project's own seeds (fuzz/seeds.py) and, when the third-party fixtures
#      are present (LAYERCACHE_FIXTURES, else ../shared/fixtures), seeds made
#      from them; without them it says so and fuzzes without.
# Any crash fails the script.
#
# scripts/fuzz.sh --update-corpus: afterwards, minimizes each working corpus
# (libFuzzer -merge=1 into a fresh directory) and replaces fuzz/corpus/<target>
# with it; commit the result. The fixtures are not used then, so that the
# committed corpora hold no third-party file.
set -euo pipefail
cd "$(dirname "$0")/.."
update=0
[ "${1:-}" = "--update-corpus" ] && update=1
seconds=${FUZZ_SECONDS:-60}
if [ -n "${CI:-}" ] && [ "$seconds" -lt 60 ]; then
  echo "fuzz: CI runs each target at least 60 s (FUZZ_SECONDS=$seconds raised to 60)"
  seconds=60
fi
targets="safetensors_fuzz index_fuzz remote_header_fuzz remote_entry_fuzz"
CXX=clang++ CC=clang cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAYERCACHE_FUZZ=ON \
  -DLAYERCACHE_SANITIZE=address,undefined -DLAYERCACHE_BUILD_TESTS=OFF -DLAYERCACHE_BUILD_BENCH=OFF \
  -DLAYERCACHE_BUILD_PYTHON=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build build-fuzz --target $targets

fixtures=${LAYERCACHE_FIXTURES:-../shared/fixtures}
if [ "$update" = 1 ]; then
  echo "fuzz: --update-corpus: the third-party fixtures are not used (the committed corpora hold none)"
  fixtures=
elif [ -d "$fixtures/safetensors" ]; then
  echo "fuzz: seeding the working corpora also from the third-party fixtures in $fixtures"
else
  echo "fuzz: third-party fixtures not found ($fixtures): seeding from fuzz/corpus and fuzz/seeds.py only"
  fixtures=
fi
seeds=build-fuzz/seeds
rm -rf "$seeds"
python3 fuzz/seeds.py "$seeds"

fixture_seeds() {  # target corpus_dir: seeds made from the fixtures
  local t=$1 corpus=$2 f
  case $t in
    safetensors_fuzz)
      cp "$fixtures"/safetensors/*.safetensors "$corpus"/
      [ -f "$fixtures/hub/lfs_pointer_model.safetensors" ] && cp "$fixtures/hub/lfs_pointer_model.safetensors" "$corpus"/ ;;
    index_fuzz) cp "$fixtures"/hub/*.json "$corpus"/ 2>/dev/null || true ;;
    remote_header_fuzz)
      for f in "$fixtures"/safetensors/*.safetensors; do
        python3 -c "import struct,sys,os; p=sys.argv[1]; sys.stdout.buffer.write(struct.pack('<Q', os.path.getsize(p)) + open(p,'rb').read()[:100000])" "$f" \
          >"$corpus/fixture-$(basename "$f").remote"
      done ;;
    remote_entry_fuzz)
      # One byte of piece size, then a layer file.
      for f in "$fixtures"/safetensors/*.safetensors; do
        { printf '\x07'; cat "$f"; } >"$corpus/fixture-$(basename "$f").entry"
      done ;;
  esac
}

for t in $targets; do
  bin=build-fuzz/fuzz/$t
  if compgen -G "fuzz/regressions/$t-*" >/dev/null; then
    echo "=== $t: regressions"
    "$bin" fuzz/regressions/$t-* 2>&1 | tail -n 3
  fi
  if [ -d "fuzz/corpus/$t" ]; then
    echo "=== $t: replaying fuzz/corpus/$t ($(find "fuzz/corpus/$t" -type f | wc -l) inputs)"
    "$bin" -runs=0 -timeout=10 "fuzz/corpus/$t" 2>&1 | tail -n 2
  fi
  corpus=build-fuzz/corpus-$t
  rm -rf "$corpus"
  mkdir -p "$corpus"
  [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$corpus"/
  cp "$seeds/$t"/* "$corpus"/
  if [ -n "$fixtures" ] && [ "$update" = 0 ]; then fixture_seeds "$t" "$corpus"; fi
  echo "=== $t: ${seconds}s"
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 "$corpus" 2>&1 | tail -n 12
  if [ "$update" = 1 ]; then
    fresh=build-fuzz/merged-$t
    rm -rf "$fresh"
    mkdir -p "$fresh"
    "$bin" -merge=1 "$fresh" "$corpus" 2>&1 | tail -n 1
    rm -rf "fuzz/corpus/$t"
    mkdir -p fuzz/corpus
    mv "$fresh" "fuzz/corpus/$t"
    echo "=== $t: fuzz/corpus/$t now $(find "fuzz/corpus/$t" -type f | wc -l) inputs, $(du -sh "fuzz/corpus/$t" | cut -f1)"
  fi
done
