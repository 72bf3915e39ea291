#!/usr/bin/python3
"""The Python pass of scripts/demo.sh: greedy generation from a synthetic Llama-family checkpoint
streamed layer by layer through the cache (layercache.sli), in tokens/s:

- from disk: a memory tier of about two layers, so every layer is read from the disk tier each step
  (the entry files are in the page cache: this is the cache's read path, not the device);
- from memory: a memory tier that holds the model, after one warm-up pass;
- resident: every layer held by the runner (no cache lookups at all).

    /usr/bin/python3 scripts/sli_demo.py [--layers 8] [--hidden 512] [--tokens 16]
"""
import argparse
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python", "tests"))  # the synthetic checkpoint writer

import layercache  # noqa: E402
from layercache.sli import StreamingModel  # noqa: E402
import synthetic_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="tokens/s of layercache.sli from disk, memory and resident")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        ckpt = os.path.join(work, "ckpt")
        synthetic_models.write_model(ckpt, "llama", layers=a.layers, hidden=a.hidden, heads=8, kv_heads=4,
                                     inter=a.hidden * 8 // 3, vocab=2000)
        model_bytes = os.path.getsize(os.path.join(ckpt, "model.safetensors"))
        layer_bytes = model_bytes / (a.layers + 1)
        cache_dir = os.path.join(work, "cache")
        layercache.LayerCache(cache_dir=cache_dir).import_checkpoint(ckpt, "demo-llama")
        prompt = torch.randint(0, 2000, (1, 8))
        results, tokens = [], None
        for label, budget, resident in (("from disk", 2.2 * layer_bytes, False),
                                        ("from memory", 4.0 * model_bytes, False),
                                        ("resident", 4.0 * model_bytes, True)):
            cache = layercache.LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=budget / 2**30)
            model = StreamingModel(cache, "demo-llama", resident=resident)
            model.generate(prompt, 1)  # warm-up
            before = cache.get_stats()["performance"]
            t = time.perf_counter()
            out = model.generate(prompt, a.tokens)
            dt = time.perf_counter() - t
            after = cache.get_stats()["performance"]
            if tokens is None:
                tokens = out
            assert torch.equal(out, tokens), "the three passes must generate the same tokens"
            results.append((label, a.tokens / dt, after["disk_hits"] - before["disk_hits"],
                            after["memory_hits"] - before["memory_hits"]))
        print(f"layercache.sli: {a.layers}-layer Llama-family model, {model_bytes / 2**20:.1f} MiB bf16, "
              f"{a.tokens} greedy tokens (no KV cache), torch {torch.__version__}")
        for label, tps, disk, mem in results:
            print(f"  {label:12s} {tps:8.1f} tokens/s   ({disk} disk hits, {mem} memory hits)")
        print(f"  tokens: {tokens[0, prompt.shape[1]:].tolist()} (identical in all three passes)")


if __name__ == "__main__":
    main()
