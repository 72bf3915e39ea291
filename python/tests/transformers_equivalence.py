"""Checks, in a fresh process, that the layer the cache returns for each family equals transformers' own
decoder-layer class holding the same weights (run with a python that has transformers and torch 2.x,
e.g. the test virtualenv of scripts/install-python-env.sh).

    python transformers_equivalence.py CACHE_DIR FAMILY [FAMILY...]

The cache must hold model "<family>" (import_checkpoint of a synthetic checkpoint with config.json).
Prints one line per family and exits non-zero on a mismatch. Tolerance: bf16 inputs and weights, the
outputs compared in float32 with atol 2e-2, rtol 2e-2 (about two bf16 ulps at the outputs' scale)."""
import sys

import torch
import transformers

import layercache

ATOL, RTOL = 2e-2, 2e-2


def reference_layer(family, config):
    if family == "gpt2":
        cfg = transformers.GPT2Config(**config)
        cfg._attn_implementation = "eager"
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block
        return GPT2Block(cfg, layer_idx=0), cfg
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config}[family]
    cfg = cls(**config)
    cfg._attn_implementation = "eager"
    mod = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}[family]
    m = __import__(f"transformers.models.{mod}.modeling_{mod}", fromlist=["x"])
    layer_cls = getattr(m, {"llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer",
                            "qwen2": "Qwen2DecoderLayer"}[family])
    rope_cls = getattr(m, {"llama": "LlamaRotaryEmbedding", "mistral": "MistralRotaryEmbedding",
                           "qwen2": "Qwen2RotaryEmbedding"}[family])
    return (layer_cls(cfg, layer_idx=0), rope_cls(config=cfg)), cfg


def run_reference(family, ref, x):
    b, s, _ = x.shape
    mask = torch.full((s, s), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)[None, None].expand(b, 1, s, s)
    pos = torch.arange(s)[None].expand(b, s)
    if family == "gpt2":
        out = ref(x, attention_mask=mask)
    else:
        layer, rope = ref
        cos, sin = rope(x, pos)
        out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    return out[0] if isinstance(out, tuple) else out


def main():
    cache = layercache.LayerCache(cache_dir=sys.argv[1])
    bad = 0
    for family in sys.argv[2:]:
        layer = cache.get_layer(family, 1)
        assert isinstance(layer, layercache.models.__dict__[type(layer).__name__]), type(layer)
        config = cache.model_config(family)
        ref, _ = reference_layer(family, config)
        module = ref if family == "gpt2" else ref[0]
        weights = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        missing, unexpected = module.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.endswith("attn.bias") and not k.endswith("masked_bias")]
        assert not missing and not unexpected, (missing, unexpected)
        module.to(torch.bfloat16).eval()
        if family != "gpt2":
            ref[1].to(torch.float32)
        torch.manual_seed(1)
        x = torch.randn(2, 7, config.get("hidden_size") or config["n_embd"]).to(torch.bfloat16)
        with torch.no_grad():
            ours = layer(x).float()
            theirs = run_reference(family, ref, x).float()
        diff = (ours - theirs).abs().max().item()
        ok = torch.allclose(ours, theirs, atol=ATOL, rtol=RTOL)
        print(f"{family}: {type(layer).__name__} vs transformers {type(module).__name__}: max |diff| {diff:.3g} "
              f"({'ok' if ok else 'MISMATCH'})")
        bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
