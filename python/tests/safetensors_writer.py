"""Writes a tiny Llama-shaped model.safetensors with the format written out by
hand (the tests do not depend on the safetensors package)."""
import json
import struct

import torch


def write_model(directory, layers=3, dim=8):
    tensors = {"model.embed_tokens.weight": torch.randn(32, dim), "lm_head.weight": torch.randn(32, dim)}
    for i in range(layers):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(dim, dim)
        tensors[f"model.layers.{i}.mlp.down_proj.weight"] = torch.randn(dim, dim)
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(directory / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return tensors
