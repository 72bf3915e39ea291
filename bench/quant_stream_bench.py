"""Tokens/s of the streaming runner (layercache.sli.StreamingModel) with the layers cached as bf16, nf4
and int8, in one run: a synthetic Llama-shaped checkpoint (bf16 N(0, 0.02) weights) imported once, the
same layers quantized into the same cache under "nf4"/"int8", then greedy generation with a memory tier
too small for the bf16 model, (a) with the entry files in the page cache ("warm") and (b) with the page
cache dropped before every token ("cold": each layer read from the disk; `sync; echo 3 >
/proc/sys/vm/drop_caches` as root, else posix_fadvise(DONTNEED) of the entries, and it says which).
Medians of --reps runs.

    PYTHONPATH=build/python /usr/bin/python3 bench/quant_stream_bench.py [--layers 8] [--hidden 1024] [--threads 1]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python", "tests"))
import synthetic_models as sm  # noqa: E402

import layercache  # noqa: E402
from layercache import quantization as Q  # noqa: E402
from layercache.sli import StreamingModel  # noqa: E402


def evict(cache_dir):
    """Drops the page cache (root) or the entries' pages; returns which."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "sync; echo 3 > /proc/sys/vm/drop_caches"
    except OSError:
        pass
    for root, _, files in os.walk(os.path.join(cache_dir, "entries")):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "posix_fadvise(DONTNEED) of the entries (not root: the page cache was not dropped as a whole)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    # One torch thread by default: on a shared machine a second OpenMP thread waits for a busy core at
    # every barrier (measured: 7x slower per token at a load average of 15 on 2 cores).
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = tempfile.mkdtemp(prefix="layercache-qstream-", dir="/var/tmp")
    try:
        run(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(a, work):
    ckpt = os.path.join(work, "ckpt")
    sm.write_model(ckpt, "llama", layers=a.layers, hidden=a.hidden, heads=8, kv_heads=4,
                   inter=int(a.hidden * 2.75), vocab=1000)
    cache_dir = os.path.join(work, "cache")
    # Memory tier: a third of the bf16 layers (so bf16 streams from disk, nf4 nearly fits).
    layer_bytes = None
    setup = layercache.LayerCache(cache_dir=cache_dir)
    setup.import_checkpoint(ckpt, "m")
    for i in range(a.layers):
        plain = setup.get_layer("m", i)
        layer_bytes = sum(t.numel() * t.element_size() for t in plain.state_dict().values())
        for mode in ("nf4", "int8"):
            setup.cache_layer("m", i, Q.quantize_layer(plain, Q.config_for_mode(mode)), quantization_mode=mode)
    del setup
    budget_gb = layer_bytes * a.layers / 3 / 2**30
    print(f"model: llama, {a.layers} layers, hidden {a.hidden}, {layer_bytes / 1e6:.1f} MB per bf16 layer; "
          f"memory tier {budget_gb * 1024:.0f} MiB; {a.tokens} tokens per run, {a.reps} runs, medians; "
          f"kernel {Q.kernel_name()}, torch threads {torch.get_num_threads()}")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    results = {}
    how = "?"
    # Repetition-major: each repetition runs every mode and regime once, so that a busy machine weighs
    # on all of them alike.
    times = {(mode, regime): [] for mode in (None, "nf4", "int8") for regime in ("warm", "cold")}
    for _ in range(a.reps):
        for (mode, regime), spent in times.items():
            cache = layercache.LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=budget_gb)
            model = StreamingModel(cache, "m", quantization_mode=mode)
            model.generate(ids, 1)  # warms the page cache and torch
            t = 0.0
            for _ in range(a.tokens):
                if regime == "cold":
                    how = evict(cache_dir)
                t0 = time.perf_counter()
                model.generate(ids, 1)
                t += time.perf_counter() - t0
            spent.append(t)
            del model, cache
    for (mode, regime), spent in times.items():
        tps = a.tokens / statistics.median(spent)
        results[(mode, regime)] = tps
        print(f"  {mode or 'bf16':5s} {regime}: {tps:6.2f} tokens/s")
    print(f"cold: {how} before every token")
    for regime in ("warm", "cold"):
        print(f"nf4 / bf16 tokens/s, {regime}: {results[('nf4', regime)] / results[(None, regime)]:.2f}x; "
              f"int8 / bf16: {results[('int8', regime)] / results[(None, regime)]:.2f}x")


if __name__ == "__main__":
    main()
