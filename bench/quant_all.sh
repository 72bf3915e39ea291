#!/usr/bin/env bash
# Issue #14's quantization benchmarks in one run (docs/PERFORMANCE.md, "Quantized layers"): the load
# average before and after, quant_bench (on-disk bytes, cold/warm loads in new processes, dequant GB/s
# per core) and quant_stream_bench.py (tokens/s of the streaming runner, bf16 against nf4 and int8).
# Run as root so that "cold" drops the whole page cache.
#   bench/quant_all.sh [BUILD_DIR] [quant_bench args...]     (default build dir: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
shift || true
echo "== $(date -u +%FT%TZ) $(uname -n), $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/quant_bench" "$@"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH="$build/python" /usr/bin/python3 "$here/quant_stream_bench.py" --layers 8 --hidden 1024 --tokens 3 --reps 5
echo "== $(date -u +%FT%TZ) load average: $(cut -d' ' -f1-3 /proc/loadavg)"
