"""Checks, in a fresh process, that the layer the cache returns for each family equals transformers' own
decoder-layer class holding the same weights (run with a python that has transformers and torch 2.x,
e.g. the test virtualenv of scripts/install-python-env.sh).

    python transformers_equivalence.py CACHE_DIR FAMILY [FAMILY...]

The cache must hold model "<family>" (import_checkpoint of a synthetic checkpoint with config.json;
"<family>" may carry a suffix after "_", e.g. "mistral_sw" for a Mistral model whose sliding window is
shorter than the sequence). For each it compares: ``layer(x)`` (positions 0..seq-1, causal); and, with
the second sequence left-padded by 2, ``layer(x, attention_mask=<[batch, seq] padding mask>,
position_ids=<positions counted from each sequence's first token>)`` and ``layer(x, attention_mask=<the
4-D mask>)`` against transformers' layer given the 4-D mask, the position ids and the rotary embedding
at those positions as its model builds them, at the non-padding positions. Prints one line per family
and check and exits non-zero on a mismatch. Tolerance: bf16 inputs and weights, the outputs compared
in float32 with atol 2e-2, rtol 2e-2 (about two bf16 ulps at the outputs' scale)."""
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


def four_d_mask(padding, s, dtype, window=None):
    """The additive [batch, 1, seq, seq] mask transformers' models build for eager attention: causal, within
    the sliding window, not the padding (masked_fill with the dtype's minimum)."""
    i = torch.arange(s).view(-1, 1)
    j = torch.arange(s).view(1, -1)
    allowed = j <= i
    if window:
        allowed = allowed & (i - j < window)
    allowed = allowed[None, None] & (padding != 0)[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def run_reference(family, ref, x, mask, pos=None):
    b, s, _ = x.shape
    if pos is None:
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
    for model in sys.argv[2:]:
        family = model.split("_")[0]
        layer = cache.get_layer(model, 1)
        assert isinstance(layer, layercache.models.__dict__[type(layer).__name__]), type(layer)
        config = cache.model_config(model)
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
        # The second sequence is left-padded by 2: positions count from its first token.
        padding = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
        pos = (padding.cumsum(-1) - 1).clamp(min=0)
        window = config.get("sliding_window") if family == "mistral" else None
        mask4 = four_d_mask(padding, 7, torch.bfloat16, window)
        valid = padding.bool()
        with torch.no_grad():
            causal = four_d_mask(torch.ones(2, 7), 7, torch.bfloat16, window)
            checks = [("causal", layer(x).float(), run_reference(family, ref, x, causal).float(), None)]
            theirs = run_reference(family, ref, x, mask4, pos).float()
            checks.append(("padding mask + position_ids", layer(x, attention_mask=padding, position_ids=pos).float(),
                           theirs, valid))
            kw = {} if family == "gpt2" else {"position_ids": pos}
            checks.append(("4-D mask", layer(x, attention_mask=mask4, **kw).float(), theirs, valid))
        for name, ours, theirs, where in checks:
            if where is not None:
                ours, theirs = ours[where], theirs[where]
            diff = (ours - theirs).abs().max().item()
            ok = torch.allclose(ours, theirs, atol=ATOL, rtol=RTOL)
            print(f"{model} {name}: {type(layer).__name__} vs transformers {type(module).__name__}: "
                  f"max |diff| {diff:.3g} ({'ok' if ok else 'MISMATCH'})")
            bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
