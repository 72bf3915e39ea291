"""Small random checkpoints in Hugging Face format (model.safetensors + config.json) for the Llama,
Mistral, Qwen2 and GPT-2 families, written by hand (no safetensors package needed).

    python3 synthetic_models.py DIR [--family llama] [--layers 8] [--hidden 64]
"""
import json
import os
import struct
import sys

import torch

_DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        data = raw.numpy().tobytes()
        header[name] = {"dtype": _DT[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def config_for(family, layers=4, hidden=64, heads=4, kv_heads=2, inter=160, vocab=96, dtype="bfloat16"):
    if family == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": hidden, "n_head": heads,
                "n_layer": layers, "n_inner": inter, "vocab_size": vocab, "n_positions": 256,
                "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "torch_dtype": dtype,
                "tie_word_embeddings": True}
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[family]
    c = {"architectures": [arch], "model_type": family, "hidden_size": hidden, "intermediate_size": inter,
         "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": layers,
         "rms_norm_eps": 1e-5 if family != "qwen2" else 1e-6, "rope_theta": 10000.0 if family == "llama" else 1e6,
         "vocab_size": vocab, "hidden_act": "silu", "torch_dtype": dtype, "max_position_embeddings": 256,
         "tie_word_embeddings": False}
    if family == "mistral":
        c["sliding_window"] = 4096
    return c


def layer_tensors(config, seed=0, dtype=torch.bfloat16, prefix=""):
    """One decoder layer's tensors under transformers' names (with `prefix`)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, ones=False):
        x = torch.ones(*shape) + 0.1 * torch.randn(*shape, generator=g) if ones else \
            torch.randn(*shape, generator=g) * 0.08
        return x.to(dtype)

    c = config
    if c["model_type"] == "gpt2":
        h, inner = c["n_embd"], c["n_inner"]
        names = {"ln_1.weight": w(h, ones=True), "ln_1.bias": w(h), "attn.c_attn.weight": w(h, 3 * h),
                 "attn.c_attn.bias": w(3 * h), "attn.c_proj.weight": w(h, h), "attn.c_proj.bias": w(h),
                 "ln_2.weight": w(h, ones=True), "ln_2.bias": w(h), "mlp.c_fc.weight": w(h, inner),
                 "mlp.c_fc.bias": w(inner), "mlp.c_proj.weight": w(inner, h), "mlp.c_proj.bias": w(h)}
    else:
        h, nh, nkv, inter = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        hd = h // nh
        names = {"input_layernorm.weight": w(h, ones=True), "self_attn.q_proj.weight": w(nh * hd, h),
                 "self_attn.k_proj.weight": w(nkv * hd, h), "self_attn.v_proj.weight": w(nkv * hd, h),
                 "self_attn.o_proj.weight": w(h, nh * hd), "post_attention_layernorm.weight": w(h, ones=True),
                 "mlp.gate_proj.weight": w(inter, h), "mlp.up_proj.weight": w(inter, h),
                 "mlp.down_proj.weight": w(h, inter)}
        if c["model_type"] == "qwen2":
            names.update({"self_attn.q_proj.bias": w(nh * hd), "self_attn.k_proj.bias": w(nkv * hd),
                          "self_attn.v_proj.bias": w(nkv * hd)})
    return {prefix + k: v for k, v in names.items()}


def write_model(directory, family="llama", layers=4, hidden=64, seed=0, **kw):
    """Writes model.safetensors and config.json into `directory`; returns the config."""
    os.makedirs(directory, exist_ok=True)
    c = config_for(family, layers=layers, hidden=hidden, **kw)
    g = torch.Generator().manual_seed(seed + 1000)
    tensors = {}
    if family == "gpt2":
        tensors["wte.weight"] = (torch.randn(c["vocab_size"], hidden, generator=g) * 0.1).to(torch.bfloat16)
        tensors["wpe.weight"] = (torch.randn(c["n_positions"], hidden, generator=g) * 0.02).to(torch.bfloat16)
        tensors["ln_f.weight"] = torch.ones(hidden).to(torch.bfloat16)
        tensors["ln_f.bias"] = torch.zeros(hidden).to(torch.bfloat16)
        for i in range(layers):
            tensors.update(layer_tensors(c, seed + i, prefix=f"h.{i}."))
    else:
        tensors["model.embed_tokens.weight"] = (torch.randn(c["vocab_size"], hidden, generator=g) * 0.1).to(torch.bfloat16)
        tensors["model.norm.weight"] = torch.ones(hidden).to(torch.bfloat16)
        tensors["lm_head.weight"] = (torch.randn(c["vocab_size"], hidden, generator=g) * 0.1).to(torch.bfloat16)
        for i in range(layers):
            tensors.update(layer_tensors(c, seed + i, prefix=f"model.layers.{i}."))
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(c, f)
    return c


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--family", default="llama")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--inter", type=int, default=160)
    ap.add_argument("--vocab", type=int, default=96)
    a = ap.parse_args()
    write_model(a.dir, a.family, a.layers, a.hidden, inter=a.inter, vocab=a.vocab)
    sys.exit(0)
