#!/usr/bin/python3
"""First-hit build cost of LayerCache.get_layer from Python: what the first get_layer of a layer that
is already in the memory tier costs (the Python objects are built over private bytes of the layer), with
copy-on-write mappings (the default) and with a private copy per build (LAYERCACHE_COPY_ON_WRITE=0),
for a 7B-class decoder layer (Qwen2-7B's shapes, bf16, 466 MB), a 4 MiB layer and a 9-tensor layer
of 40 KB.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_build_bench.py [--reps 9]

Per size and way it prints medians of: the build (get_layer after the objects were dropped), the build
plus a first read of every page (what a forward pass then pays: page faults for a mapping, none for a
copy), the private memory each build adds while held (three held at once, after a first read; from
/proc/self/smaps_rollup "Anonymous"), and, as the machine's limit measured in the same run, one
memcpy of the layer's bytes into warm memory.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {
    # Qwen2-7B: hidden 3584, intermediate 18944, 28 heads, 4 KV heads of 128
    "7b-466MB": {"q_proj": (3584, 3584), "k_proj": (512, 3584), "v_proj": (512, 3584), "o_proj": (3584, 3584),
                 "gate_proj": (18944, 3584), "up_proj": (18944, 3584), "down_proj": (3584, 18944),
                 "q_bias": (3584,), "k_bias": (512,), "v_bias": (512,), "in_norm": (3584,), "post_norm": (3584,)},
    "64MiB": {"w": (8192, 4096)},
    "16MiB": {"w": (4096, 2048)},
    "4MiB": {"w": (1024, 2048)},
    "1MiB": {"w": (512, 1024)},
    "small-40KB": {f"t{i}": (48, 48) for i in range(9)},
}


def private_mb():
    """Memory this process holds privately: anonymous pages (a copy's, or pages a write copied)."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(cache_dir, name, reps):
    import torch
    import layercache
    c = layercache.LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=2)
    layer = c.get_layer(name, 0)  # loads it into the memory tier (and builds once)
    nbytes = sum(t.numel() * t.element_size() for t in layer.values())
    cow = layer.copy_on_write
    del layer
    build, touched = [], []
    for _ in range(reps):
        c._forget()
        t0 = time.perf_counter()
        got = c.get_layer(name, 0)
        t1 = time.perf_counter()
        got.base[::4096].sum()  # one byte of every page
        t2 = time.perf_counter()
        build.append(t1 - t0)
        touched.append(t2 - t0)
        del got
    # Memory three builds held at once add (each a separate holder of the layer).
    before = private_mb()
    held = [c.prefetch(name, [0])[0].result() for _ in range(3)]
    for h in held:
        h.base[::4096].sum()
    added = (private_mb() - before) / 3
    del held
    import numpy as np
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = src
    copies = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst[:] = src
        copies.append(time.perf_counter() - t0)
    print(json.dumps({"nbytes": nbytes, "copy_on_write": cow, "build": statistics.median(build),
                      "build_and_read": statistics.median(touched), "held_mb": added,
                      "memcpy": statistics.median(copies)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.reps)
    import torch
    import layercache
    with tempfile.TemporaryDirectory() as d:
        c = layercache.LayerCache(cache_dir=d, max_memory_cache_size_gb=0)
        for name, shapes in SIZES.items():
            c.cache_layer(name, 0, {k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()})
        del c
        print(f"{'layer':<11} {'way':<14} {'build':>10} {'build+read':>11} {'memory/hold':>12} {'memcpy':>9}  "
              f"build vs copy")
        for name in SIZES:
            rows = {}
            for way, flag in (("copy-on-write", "1"), ("copy", "0")):
                # Mapped at every size here (the default maps 16 MiB and more), to compare the ways.
                env = dict(os.environ, LAYERCACHE_COPY_ON_WRITE=flag, LAYERCACHE_COPY_ON_WRITE_MIN_MB="0")
                out = subprocess.run([sys.executable, __file__, "--reps", str(args.reps), "--child", d, name],
                                     env=env, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows[way] = r
            for way, r in rows.items():
                ratio = r["build"] / rows["copy"]["build"]
                print(f"{name:<11} {way + ('' if r['copy_on_write'] == (way != 'copy') else '*'):<14} "
                      f"{r['build'] * 1e3:>8.3f}ms {r['build_and_read'] * 1e3:>9.3f}ms "
                      f"{r['held_mb']:>10.1f}MB {r['memcpy'] * 1e3:>7.3f}ms  {ratio:.3f}")
        print("(* the layer was copied: it has no file behind it, being under 1 MiB)")


if __name__ == "__main__":
    main()
