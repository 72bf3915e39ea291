#!/usr/bin/env python3
"""Writes the project's own seed inputs for the libFuzzer targets (no third-party files).

usage: fuzz/seeds.py OUT_DIR   -> OUT_DIR/<target>/<seed>
The committed corpora (fuzz/corpus/<target>/) grew from these by fuzzing and were minimized
with libFuzzer's -merge=1 (scripts/fuzz.sh --update-corpus).
"""
import json
import os
import struct
import sys


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def layer_files():
    yield "empty", safetensors([])
    yield "f32", safetensors([("model.layers.0.mlp.up_proj.weight", "F32", [2, 3], bytes(range(24)))],
                             {"format": "pt"})
    yield "mixed", safetensors([
        ("a.weight", "F16", [4], b"\x00\x3c" * 4),
        ("b.weight", "BF16", [2, 2], b"\x80\x3f" * 4),
        ("c.bias", "I8", [3], b"\x01\x02\x03"),
        ("d.idx", "I64", [1], struct.pack("<q", -7)),
        ("e.flag", "BOOL", [2], b"\x00\x01"),
        ("f.scalar", "F64", [], struct.pack("<d", 1.5)),
        ("g.u8", "U8", [0], b""),
    ])
    yield "quant", safetensors([
        ("q.weight", "U8", [4, 4], bytes(16)),
        ("q.weight.absmax", "F32", [1], struct.pack("<f", 0.5)),
        ("q.weight.quant_map", "F32", [2], struct.pack("<ff", -1.0, 1.0)),
    ], {"quantization": "nf4", "layercache.key": "m/0"})
    yield "lfs_pointer", (b"version https://git-lfs.github.com/spec/v1\n"
                          b"oid sha256:" + b"0" * 64 + b"\nsize 12345\n")


def index_files():
    yield "two_shards", json.dumps({
        "metadata": {"total_size": 96},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
            "model.layers.1.mlp.down_proj.weight": "model-00002-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }}, indent=2).encode()
    yield "escape", json.dumps({"weight_map": {"x": "../x.safetensors", "y": "/etc/passwd"}}).encode()
    yield "empty", b"{}"


def main():
    out = sys.argv[1]
    files = dict(layer_files())
    targets = {
        "safetensors_fuzz": files,
        "index_fuzz": dict(index_files()),
        # 8 bytes of claimed file size, then a prefix of the file.
        "remote_header_fuzz": {n: struct.pack("<Q", len(b)) + b for n, b in files.items()},
        # 1 byte of piece size, then a layer file or a manifest.
        "remote_entry_fuzz": dict(
            [(n, b"\x07" + b) for n, b in files.items()] +
            [("manifest", b"\x01" + json.dumps({
                "format": 1, "digest": "0123456789abcdef0123456789abcdef", "key": "m/0", "id": "00ff",
                "size": 10, "chunk_bytes": 4, "xxh3_64": ["a", "b", "c"], "xxh3_128": "x"}).encode())]),
    }
    for target, seeds in targets.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, target, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
