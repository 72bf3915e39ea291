"""Greedy generation from a model larger than the memory budget, side by side, in one run:
layercache's streaming runner (layercache.sli, cold and warm disk), the seed's path (per-layer .pt files,
hashlib.md5 + torch.load each time a layer is needed) and AirLLM (PyPI), from the same synthetic
Llama checkpoint written with transformers' save_pretrained.

    PYTHONPATH=build/python /work/venv/bin/python bench/sli_compare.py [--layers 16] [--hidden 1024]
        [--intermediate 2816] [--prompt 16] [--tokens 8] [--reps 3] [--workdir DIR] [--smoke]

Every measurement runs in a new process; "cold" means the page cache was dropped before it
(`sync; echo 3 > /proc/sys/vm/drop_caches` as root, else posix_fadvise(DONTNEED) of the files, and it
says so). Time to first token (TTFT) = generate(max_new_tokens=1) in a new process; tokens/s = the
tokens of generate(max_new_tokens=N) divided by its time, the process already started and the model
object built (building it is timed apart). All three run the whole sequence through every layer at
each step (none keeps a KV cache across layers here: the layers do not stay in memory).
Needs transformers and torch 2.x (the /work/venv of this project); AirLLM is optional (--skip-airllm).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def drop_caches(paths):
    os.sync()
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return "drop_caches"
        except OSError:
            pass
    for root in paths:
        for d, _, files in os.walk(root):
            for name in files:
                try:
                    fd = os.open(os.path.join(d, name), os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
                except OSError:
                    pass
    return "fadvise"


def run_child(code, env=None):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"child failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


SETUP = """
import json, os, sys, torch, transformers
cfg = transformers.LlamaConfig(vocab_size={vocab}, hidden_size={hidden}, intermediate_size={inter},
                               num_hidden_layers={layers}, num_attention_heads={heads}, num_key_value_heads={kv},
                               max_position_embeddings=512, tie_word_embeddings=False, torch_dtype="bfloat16")
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(cfg)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.02)
model = model.to(torch.bfloat16).eval()
model.save_pretrained({ckpt!r}, safe_serialization=True)
# A word-level tokenizer beside it (AirLLM loads one from the checkpoint's folder).
from tokenizers import Tokenizer, models as tm, pre_tokenizers
tok = Tokenizer(tm.WordLevel({{f"t{{i}}": i for i in range({vocab})}}, unk_token="t0"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0", bos_token="t1",
                                     eos_token="t2").save_pretrained({ckpt!r})
os.makedirs({seed!r}, exist_ok=True)
sums = {{}}
for i, layer in enumerate(model.model.layers):
    path = os.path.join({seed!r}, f"layer_{{i}}.pt")
    torch.save(layer.state_dict(), path)
    import hashlib
    sums[i] = hashlib.md5(open(path, "rb").read()).hexdigest()
torch.save({{"embed": model.model.embed_tokens.weight, "norm": model.model.norm.weight,
            "lm_head": model.lm_head.weight}}, os.path.join({seed!r}, "head.pt"))
json.dump(sums, open(os.path.join({seed!r}, "md5.json"), "w"))
ids = torch.randint(0, {vocab}, (1, {prompt}), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    ref = model.generate(ids, max_new_tokens={tokens}, do_sample=False, use_cache=False)
print(json.dumps({{"ids": ids.tolist(), "ref": ref.tolist()}}))
"""

OURS = """
import json, time, torch
t0 = time.perf_counter()
import layercache
from layercache.sli import StreamingModel
cache = layercache.LayerCache(cache_dir={cache!r}, max_memory_cache_size_gb={budget})
model = StreamingModel(cache, "llama", lookahead=2)
build = time.perf_counter() - t0
ids = torch.tensor({ids})
t0 = time.perf_counter(); out = model.generate(ids, max_new_tokens={n}); s = time.perf_counter() - t0
print(json.dumps({{"seconds": s, "build": build, "out": out.tolist()}}))
"""

SEED = """
import hashlib, io, json, os, time, torch, transformers
from transformers.models.llama import modeling_llama as ml
t0 = time.perf_counter()
cfg = transformers.LlamaConfig.from_pretrained({ckpt!r})
sums = json.load(open(os.path.join({seed!r}, "md5.json")))
head = torch.load(os.path.join({seed!r}, "head.pt"))
rotary = ml.LlamaRotaryEmbedding(cfg)
with torch.device("meta"):
    skeleton = ml.LlamaDecoderLayer(cfg, 0)
build = time.perf_counter() - t0

def load(i):  # the seed's path: read, MD5-verify and torch.load the layer's .pt file
    data = open(os.path.join({seed!r}, f"layer_{{i}}.pt"), "rb").read()
    if hashlib.md5(data).hexdigest() != sums[str(i)]:
        raise RuntimeError("checksum mismatch")
    sd = torch.load(io.BytesIO(data))
    with torch.device("meta"):
        layer = ml.LlamaDecoderLayer(cfg, i)
    layer.load_state_dict(sd, assign=True)
    return layer.eval()

@torch.no_grad()
def forward(ids):
    h = torch.nn.functional.embedding(ids, head["embed"])
    pos = torch.arange(ids.shape[1])[None]
    pe = rotary(h, pos)
    # The causal mask as the model would build it (0 on and below the diagonal, the dtype's minimum
    # above): a decoder layer called alone gets none, and eager attention then sees the future.
    n = ids.shape[1]
    mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
    for i in range(cfg.num_hidden_layers):
        out = load(i)(h, position_embeddings=pe, attention_mask=mask, position_ids=pos)
        h = out[0] if isinstance(out, tuple) else out
    x = h.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)
    h = head["norm"] * x.to(h.dtype)
    return torch.nn.functional.linear(h, head["lm_head"]).float()

ids = torch.tensor({ids})
t0 = time.perf_counter()
for _ in range({n}):
    nxt = forward(ids)[:, -1].argmax(-1, keepdim=True)
    ids = torch.cat([ids, nxt], dim=1)
s = time.perf_counter() - t0
print(json.dumps({{"seconds": s, "build": build, "out": ids.tolist()}}))
"""

AIRLLM = """
import json, time, torch
t0 = time.perf_counter()
from airllm import AutoModel
model = AutoModel.from_pretrained({ckpt!r}, device="cpu", dtype=torch.bfloat16, max_seq_len=512,
                                  layer_shards_saving_path={shards!r})
build = time.perf_counter() - t0
ids = torch.tensor({ids})
t0 = time.perf_counter()
out = model.generate(ids, max_new_tokens={n}, use_cache=False, do_sample=False, return_dict_in_generate=False)
s = time.perf_counter() - t0
out = out if isinstance(out, torch.Tensor) else out.sequences
print(json.dumps({{"seconds": s, "build": build, "out": out.tolist()}}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-airllm", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a tiny model, one repetition")
    a = ap.parse_args()
    if a.smoke:
        a.layers, a.hidden, a.intermediate, a.vocab, a.prompt, a.tokens, a.reps = 2, 64, 128, 256, 4, 2, 1
    work = a.workdir or tempfile.mkdtemp(prefix="sli-compare-", dir="/var/tmp")
    ckpt, seed, cache, shards = (os.path.join(work, x) for x in ("ckpt", "seed", "cache", "airllm-shards"))
    heads = max(1, a.hidden // 64)
    kv = max(1, heads // 4)
    setup = run_child(SETUP.format(vocab=a.vocab, hidden=a.hidden, inter=a.intermediate, layers=a.layers,
                                   heads=heads, kv=kv, ckpt=ckpt, seed=seed, prompt=a.prompt, tokens=a.tokens))
    ids, ref = setup["ids"], setup["ref"]
    import layercache  # noqa: E402  (the built module, from PYTHONPATH)
    layercache.LayerCache(cache_dir=cache).import_checkpoint(ckpt, "llama")
    layer_bytes = os.path.getsize(os.path.join(seed, "layer_0.pt"))
    model_bytes = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    budget_gb = 3.5 * layer_bytes / (1 << 30)  # room for the layer running and the ones prefetched
    print(f"model: {a.layers} layers of {layer_bytes / 1e6:.1f} MB, {model_bytes / 1e6:.0f} MB in all (bf16); "
          f"memory budget {budget_gb * 1024:.0f} MiB; prompt {a.prompt} tokens; {a.reps} reps, medians; "
          f"work dir {work}")

    paths = {
        "layercache": lambda n: OURS.format(cache=cache, budget=budget_gb, ids=ids, n=n),
        "seed (.pt + md5 + torch.load)": lambda n: SEED.format(ckpt=ckpt, seed=seed, ids=ids, n=n),
    }
    if not a.skip_airllm:
        try:
            import airllm  # noqa: F401
            run_child(AIRLLM.format(ckpt=ckpt, shards=shards, ids=ids, n=1))  # splits the checkpoint once
            paths["AirLLM"] = lambda n: AIRLLM.format(ckpt=ckpt, shards=shards, ids=ids, n=n)
        except Exception as e:  # noqa: BLE001
            print(f"AirLLM cannot run here: {str(e).strip().splitlines()[-1]}")
    rows = []
    how = None
    for name, code in paths.items():
        for state in ("cold", "warm"):
            if state == "warm" and name != "layercache":
                continue  # the others are shown cold (a fresh process after the page cache was dropped)
            ttft, tps, build, same = [], [], [], True
            for _ in range(a.reps):
                for n in (1, a.tokens):
                    if state == "cold":
                        how = drop_caches([work])
                    r = run_child(code(n))
                    if n == 1:
                        ttft.append(r["seconds"])
                    else:
                        tps.append(n / r["seconds"])
                        build.append(r["build"])
                        same = same and r["out"] == ref
            med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
            rows.append((name, state, med(ttft), med(tps), med(build), same))
    print(f"\ncold: a new process after {'sync; echo 3 > /proc/sys/vm/drop_caches' if how == 'drop_caches' else 'posix_fadvise(DONTNEED) of the files (not root)'}")
    print(f"{'path':32} {'disk':5} {'TTFT s':>8} {'tokens/s':>9} {'setup s':>8}  same tokens as transformers")
    for name, state, t, s, b, same in rows:
        print(f"{name:32} {state:5} {t:8.2f} {s:9.3f} {b:8.2f}  {same}")
    by = {(r[0], r[1]): r for r in rows}
    if ("AirLLM", "cold") in by:
        ours = by[("layercache", "cold")]
        air = by[("AirLLM", "cold")]
        print(f"\nlayercache cold / AirLLM cold: {ours[3] / air[3]:.2f}x tokens/s, TTFT {air[2] / ours[2]:.2f}x shorter")
    seedr = by[("seed (.pt + md5 + torch.load)", "cold")]
    print(f"layercache cold / seed path: {by[('layercache', 'cold')][3] / seedr[3]:.2f}x tokens/s")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
