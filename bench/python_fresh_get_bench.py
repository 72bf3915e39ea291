#!/usr/bin/python3
"""get_layer of a 7B-class layer (Qwen2-7B shapes, bf16, 466 MB) in a fresh /usr/bin/python3 process,
with copy-on-write mappings (the default: buffers in a memory file, the Python objects a private mapping
of them) against LAYERCACHE_COPY_ON_WRITE=0 (anonymous buffers, the Python objects a private copy).
The entry is in the page cache (read with `cat` before each run: warm, not cold), so this measures the
memory side: the read into a fresh buffer and the build. Both ways and both read modes interleaved.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_fresh_get_bench.py [--reps 4]

Prints medians of get_layer and of get_layer plus a first read of every page, and the ratio.
"""
import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r'''
import sys, time, layercache
c = layercache.LayerCache(cache_dir=sys.argv[1], disk_read_mode=sys.argv[2])
t0 = time.perf_counter(); l = c.get_layer("big", 0); t1 = time.perf_counter()
l.base[::4096].sum(); t2 = time.perf_counter()
print(t1 - t0, t2 - t0, l.copy_on_write)
'''

SHAPES = {"q_proj": (3584, 3584), "k_proj": (512, 3584), "v_proj": (512, 3584), "o_proj": (3584, 3584),
          "gate_proj": (18944, 3584), "up_proj": (18944, 3584), "down_proj": (3584, 18944)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    import torch
    import layercache
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        layercache.LayerCache(cache_dir=d, max_memory_cache_size_gb=0).cache_layer(
            "big", 0, {k: torch.randn(s).to(torch.bfloat16) for k, s in SHAPES.items()})
        entries = [p for p in glob.glob(os.path.join(d, "**", "*"), recursive=True) if os.path.isfile(p)]
        res = {}
        for _ in range(args.reps):
            for mode in ("direct", "buffered"):
                for way, flag in (("copy-on-write", "1"), ("copy", "0")):
                    for p in entries:
                        subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True)
                    env = dict(os.environ, LAYERCACHE_COPY_ON_WRITE=flag)
                    out = subprocess.run([sys.executable, "-c", CHILD, d, mode], env=env, capture_output=True,
                                         text=True, check=True).stdout.split()
                    res.setdefault((mode, way), []).append((float(out[0]), float(out[1])))
        print(f"{'mode':<9} {'way':<14} {'get_layer':>10} {'+ read':>10}  get_layer vs copy")
        for (mode, way), v in res.items():
            get = statistics.median(x for x, _ in v)
            both = statistics.median(y for _, y in v)
            base = statistics.median(x for x, _ in res[(mode, "copy")])
            print(f"{mode:<9} {way:<14} {get * 1e3:>8.1f}ms {both * 1e3:>8.1f}ms  {get / base:.2f}")
        print("load average", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
