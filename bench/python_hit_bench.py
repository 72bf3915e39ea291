#!/usr/bin/python3
"""Memory-hit cost of LayerCache.get_layer from Python, side by side with a seed-style pure-Python
LRU hit (OrderedDict lookup + move_to_end + hit counter, under a lock) measured in the same run,
for a layer of 9 small tensors returned as a dict and as a module (a Llama decoder layer).

    PYTHONPATH=build/python /usr/bin/python3 bench/python_hit_bench.py [--reps 200000]

Prints the median of 15 interleaved runs per figure (ns per call) and the ratio get_layer / seed LRU.
"""
import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time

import torch

import layercache
import layercache.models


class SeedLRU:
    """The seed's memory tier: an OrderedDict LRU with a lock and a hit counter."""

    def __init__(self):
        self.d = collections.OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0

    def get(self, key):
        with self.lock:
            v = self.d.get(key)
            if v is not None:
                self.d.move_to_end(key)
                self.hits += 1
            return v


def per_call(fns, reps, runs=15):
    """Median ns per call of each function; the runs are interleaved so that all see the same load."""
    times = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t = time.perf_counter_ns()
            for _ in range(reps):
                fn()
            times[i].append((time.perf_counter_ns() - t) / reps)
    return [statistics.median(t) for t in times]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20000)
    a = ap.parse_args()
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
           "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"}
    module = layercache.models.LlamaDecoderLayer(cfg)
    tensors = {k: torch.randn(v.shape).to(v.dtype) for k, v in module.state_dict().items()}
    assert len(tensors) == 9
    with tempfile.TemporaryDirectory() as d:
        cache = layercache.LayerCache(cache_dir=d)
        cache.cache_layer("plain", 0, tensors)                 # returned as a dict
        cache.cache_layer("bench", 1, tensors, config=cfg)       # returned as a LlamaDecoderLayer
        assert isinstance(cache.get_layer("plain", 0), dict)
        assert isinstance(cache.get_layer("bench", 1), layercache.models.LlamaDecoderLayer)
        lru = SeedLRU()
        lru.d[("bench", 0, None)] = tensors
        key = ("bench", 0, None)
        seed, as_dict, as_module = per_call(
            [lambda: lru.get(key), lambda: cache.get_layer("plain", 0), lambda: cache.get_layer("bench", 1)],
            a.reps)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, {a.reps} calls x 15 interleaved runs, medians")
    print(f"seed-style OrderedDict LRU hit:       {seed:8.0f} ns")
    print(f"get_layer memory hit, 9-tensor dict:  {as_dict:8.0f} ns  ratio {as_dict / seed:.2f}")
    print(f"get_layer memory hit, decoder module: {as_module:8.0f} ns  ratio {as_module / seed:.2f}")


if __name__ == "__main__":
    main()
