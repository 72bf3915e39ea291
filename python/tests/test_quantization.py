"""layercache.quantization against an independent numpy implementation of bitsandbytes' NF4 and
LLM.int8() algorithms written here (the comparison with bitsandbytes itself, which needs the test
virtualenv, is python/tests_venv/test_bitsandbytes_compat.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from needs import need_module

torch = need_module("torch")

import layercache
from layercache import quantization as Q

# ---- the reference, from the algorithms' descriptions ------------------------------------------

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)
# bitsandbytes' dQuantizeNF4 (csrc/kernels.cu) compares x > t with these float literals.
TREE = ["-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
        "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
        "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
        "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]


# The tree's literals as Python reads them (double), compared in float32 (numpy's rules for a float32
# array and a Python float): what a numpy or torch port of the tree does, and what bitsandbytes' CPU
# backend's float32 midpoints are.
THRESHOLDS = np.array([float(t) for t in TREE], dtype=np.float32)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def ref_nf4(x, blocksize):
    """codes (one per element), absmax: bitsandbytes' quantize_4bit(quant_type="nf4")."""
    x = x.astype(np.float32).reshape(-1)
    n = x.size
    blocks = -(-n // blocksize)
    absmax = np.zeros(blocks, dtype=np.float32)
    codes = np.zeros(n, dtype=np.uint8)
    for b in range(blocks):
        v = x[b * blocksize:(b + 1) * blocksize]
        m = np.abs(v).max()
        absmax[b] = m
        div = np.float32(max(m, np.float32(1e-38)))
        if v.size == blocksize:
            scaled = v * (np.float32(1.0) / div)
        else:  # the last, partial block: divided (bitsandbytes' CPU code)
            scaled = v / div
        codes[b * blocksize: b * blocksize + v.size] = (scaled[:, None] > THRESHOLDS[None, :]).sum(axis=1)
    return codes, absmax


def ref_pack(codes):
    c = codes if codes.size % 2 == 0 else np.append(codes, np.uint8(7))
    return ((c[0::2] << 4) | c[1::2]).astype(np.uint8)


def ref_int8(w):
    w = w.astype(np.float32)
    scb = np.abs(w).max(axis=1)
    mult = np.float32(127) * (np.float32(1) / scb)
    return np.rint(w * mult[:, None]).astype(np.int8), scb


def random_bf16(shape, std=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return f32_to_bf16((rng.standard_normal(shape) * std).astype(np.float32))


def bf16_tensor(bits):
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)


# ---- kernels --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,blocksize", [((256, 512), 64), ((300, 77), 64), ((1000, 33), 128),
                                             ((4096, 11), 32), ((3, 5), 64), ((1, 1), 64), ((97, 1024), 4096)])
def test_nf4_codes_absmax_and_dequantized_values_match_the_reference(shape, blocksize):
    bits = random_bf16(shape, seed=shape[0] * 31 + blocksize)
    bits.reshape(-1)[:70] = 0  # an all-zero block
    x = bf16_to_f32(bits)
    codes, absmax = ref_nf4(x, blocksize)
    parts = Q.quantize_tensor("w", bf16_tensor(bits), Q.get_nf4_config(blocksize=blocksize))
    assert parts["w"].dtype == torch.uint8 and tuple(parts["w"].shape) == ((x.size + 1) // 2, 1)
    assert np.array_equal(parts["w"].numpy().reshape(-1), ref_pack(codes))
    assert np.array_equal(parts["w.absmax"].numpy(), absmax)
    assert np.array_equal(parts["w.quant_map"].numpy(), NF4)
    state = json.loads(bytes(parts["w.quant_state.bitsandbytes__nf4"].numpy().tobytes()))
    assert state == {"quant_type": "nf4", "blocksize": blocksize, "dtype": "bfloat16", "shape": list(shape)}
    info = {"mode": "nf4", "blocksize": blocksize, "nested": False,
            "tensors": {"w": {"dtype": "BF16", "shape": list(shape)}}}
    ref_values = NF4[codes] * np.repeat(absmax, blocksize)[: x.size]
    for dt, conv in (("F32", lambda v: v), ("BF16", f32_to_bf16)):
        got = Q.dequantize_tensor("w", parts, info, dt)
        got = got.view(torch.int16).numpy().view(np.uint16) if dt == "BF16" else got.numpy()
        assert np.array_equal(got.reshape(-1), conv(ref_values)), dt


def test_nf4_scalar_and_avx2_kernels_write_the_same_bytes(tmp_path):
    code = ("import numpy as np, sys; from layercache import quantization as Q\n"
            "rng = np.random.default_rng(3); x = (rng.standard_normal(100003) * 0.02).astype(np.float32)\n"
            "p = np.empty(50002, np.uint8); a = np.empty(-(-100003 // 64), np.float32)\n"
            "Q._q.quantize_nf4(x, 'F32', x.size, 64, p, a)\n"
            "o = np.empty(x.size, np.uint16); Q._q.dequantize_nf4(p, a, x.size, 64, 'BF16', o)\n"
            "sys.stdout.write(Q.kernel_name() + ' ' + str(hash(p.tobytes() + a.tobytes() + o.tobytes())))\n")
    out = {}
    for k in ("scalar", "auto"):
        env = dict(os.environ, PYTHONHASHSEED="0")
        if k == "scalar":
            env["LAYERCACHE_QUANT_KERNEL"] = "scalar"
        out[k] = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.split()
    assert out["scalar"][0] == "scalar"
    assert out["scalar"][1] == out["auto"][1], out


def test_int8_matches_the_reference_and_rounds_half_to_even():
    bits = random_bf16((64, 200), seed=9)
    x = bf16_to_f32(bits).reshape(64, 200)
    q, scb = ref_int8(x)
    parts = Q.quantize_tensor("mlp.up_proj.weight", bf16_tensor(bits.reshape(64, 200)), Q.get_int8_config())
    assert sorted(parts) == ["mlp.up_proj.SCB", "mlp.up_proj.weight", "mlp.up_proj.weight_format"]
    assert np.array_equal(parts["mlp.up_proj.weight"].numpy(), q)
    assert np.array_equal(parts["mlp.up_proj.SCB"].numpy(), scb)
    assert parts["mlp.up_proj.weight_format"].shape == () and int(parts["mlp.up_proj.weight_format"]) == 0
    w = np.array([[127.0, 0.5, 1.5, 2.5, -3.5, 0, 0, 0]], dtype=np.float32)
    p = Q.quantize_tensor("a.weight", torch.from_numpy(w), Q.get_int8_config())
    assert p["a.weight"].tolist() == [[127, 0, 2, 2, -4, 0, 0, 0]]
    info = {"mode": "int8", "tensors": {"mlp.up_proj.weight": {"dtype": "F32", "shape": [64, 200]}}}
    back = Q.dequantize_tensor("mlp.up_proj.weight", parts, info).numpy()
    assert np.array_equal(back, (q.astype(np.float32) * scb[:, None]) * np.float32(7.874015718698502e-3))


def ref_torch_sum(x, lanes=8):
    """PyTorch's float32 cascade sum of a contiguous 1-D range (SumKernel.cpp), step by step in numpy."""
    f32 = np.float32

    def multi_row_sum(load, nrows, size, zero):
        levels = 4
        power = max(4, (int(size - 1).bit_length() if size > 1 else 0) // levels)
        step, mask = 1 << power, (1 << power) - 1
        acc = [[zero.copy() for _ in range(nrows)] for _ in range(levels)]
        i = 0
        while i + step <= size:
            for _ in range(step):
                for k in range(nrows):
                    acc[0][k] = (acc[0][k] + load(i * nrows + k)).astype(f32)
                i += 1
            for j in range(1, levels):
                for k in range(nrows):
                    acc[j][k] = (acc[j][k] + acc[j - 1][k]).astype(f32)
                    acc[j - 1][k] = zero.copy()
                if i & (mask << (j * power)):
                    break
        for i in range(i, size):
            for k in range(nrows):
                acc[0][k] = (acc[0][k] + load(i * nrows + k)).astype(f32)
        for j in range(1, levels):
            for k in range(nrows):
                acc[0][k] = (acc[0][k] + acc[j][k]).astype(f32)
        return [acc[0][k] for k in range(nrows)]

    def row_sum(load, size, zero):
        part = multi_row_sum(load, 4, size // 4, zero)
        for i in range(size // 4 * 4, size):
            part[0] = (part[0] + load(i)).astype(f32)
        for k in range(1, 4):
            part[0] = (part[0] + part[k]).astype(f32)
        return part[0]

    n = x.size
    if n < lanes:
        return f32(row_sum(lambda i: x[i:i + 1], n, np.zeros(1, f32))[0])
    vecs = n // lanes
    v = row_sum(lambda i: x[i * lanes:(i + 1) * lanes], vecs, np.zeros(lanes, f32))
    acc = f32(0)
    for k in list(x[vecs * lanes:]) + list(v):
        acc = f32(acc + k)
    return acc


def ref_dynamic_lut(dmap):
    """bitsandbytes' CPU table: bin i of 65536 over [-1, 1] -> the number of float32 map midpoints below it."""
    mid = (np.float32(0.5) * (dmap[:-1] + dmap[1:])).astype(np.float32)
    edges = (np.float32(-1) + (np.float32(2) * np.arange(65536, dtype=np.float32)) / np.float32(65535)).astype(np.float32)
    return np.searchsorted(mid, edges, side="left").astype(np.uint8)


def test_nested_quantization_reference():
    bits = random_bf16((512, 512), seed=4)
    parts = Q.quantize_tensor("w", bf16_tensor(bits), Q.get_nf4_config(double_quant=True))
    _, absmax = ref_nf4(bf16_to_f32(bits), 64)
    # bitsandbytes: offset = absmax.mean() in PyTorch (4096 values: one thread's float32 cascade sum).
    offset = np.float32(ref_torch_sum(absmax) / np.float32(absmax.size))
    assert offset == np.float32(torch.from_numpy(absmax).mean().item())
    state = json.loads(bytes(parts["w.quant_state.bitsandbytes__nf4"].numpy().tobytes()))
    assert state["nested_blocksize"] == 256 and state["nested_dtype"] == "float32"
    assert np.float32(state["nested_offset"]) == offset
    centered = (absmax - offset).astype(np.float32)
    dmap = parts["w.nested_quant_map"].numpy()
    assert dmap.size == 256 and np.all(np.diff(dmap) > 0) and dmap[-1] == 1.0
    lut = ref_dynamic_lut(dmap)
    codes = parts["w.absmax"].numpy()
    nested = parts["w.nested_absmax"].numpy()
    nearest_differs = 0
    for b in range(nested.size):
        v = centered[b * 256:(b + 1) * 256]
        assert nested[b] == np.abs(v).max()
        scaled = (v * (np.float32(1) / nested[b])).astype(np.float32)
        t = ((np.clip(scaled, -1, 1) + np.float32(1)) * np.float32(0.5)).astype(np.float32)
        bins = ((t * np.float32(65535)).astype(np.float32) + np.float32(0.5)).astype(np.float32).astype(np.int64)
        assert np.array_equal(codes[b * 256:(b + 1) * 256], lut[bins])
        nearest_differs += int((np.abs(scaled[:, None] - dmap[None, :]).argmin(axis=1) != lut[bins]).sum())
    assert nearest_differs < codes.size // 20  # the table is not always the nearest code, but nearly
    info = {"mode": "nf4", "blocksize": 64, "nested": True, "tensors": {"w": {"dtype": "F32", "shape": [512, 512]}}}
    deq = Q.dequantize_tensor("w", parts, info, "F32").numpy().reshape(-1)
    rec_absmax = (dmap[codes] * np.repeat(nested, 256)[: codes.size] + offset).astype(np.float32)
    c, _ = ref_nf4(bf16_to_f32(bits), 64)
    assert np.array_equal(deq, NF4[c] * np.repeat(rec_absmax, 64))


def test_nested_offset_is_torch_mean_above_the_thread_split():
    # Above 32768 values PyTorch sums one chunk per intra-op thread, then the chunks' sums.
    x = np.random.default_rng(5).random(70001).astype(np.float32) * np.float32(0.05)
    for threads in (1, 2, 3):
        chunks = min(threads, -(-x.size // 32768))
        size = -(-x.size // chunks)
        if threads == 1:
            total = ref_torch_sum(x)
        else:
            buf = np.zeros(threads, np.float32)
            for k in range(chunks):
                buf[k] = ref_torch_sum(x[k * size:(k + 1) * size])
            total = ref_torch_sum(buf)
        assert Q._q.nested_offset(x, x.size, threads) == np.float32(total / np.float32(x.size)), threads


def test_round_trip_error_on_normal_bf16_weights(capsys):
    bits = random_bf16((1024, 1024), std=0.02, seed=1)
    w = bf16_tensor(bits)
    errs = {}
    for name, cfg in (("nf4", Q.get_nf4_config()), ("nf4 nested", Q.get_nf4_config(double_quant=True)),
                      ("int8", Q.get_int8_config())):
        q = Q.quantize_layer({"x.weight": w}, cfg)
        back = Q.dequantize(q)["x.weight"].float()
        errs[name] = float((back - w.float()).pow(2).mean().sqrt() / w.float().pow(2).mean().sqrt())
    with capsys.disabled():
        print("\nround-trip relative RMS error on N(0, 0.02) bf16 [1024x1024]: " +
              ", ".join(f"{k} {v:.4f}" for k, v in errs.items()))
    # NF4's expected error for normal weights is about 9-10%; int8 about 0.8%.
    assert 0.05 < errs["nf4"] < 0.11 and abs(errs["nf4 nested"] - errs["nf4"]) < 0.005
    assert errs["int8"] < 0.012


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error_or_a_defined_result():
    w = torch.randn(128, 128) * 0.02
    w[3, 7] = float("nan")
    for cfg in (Q.get_nf4_config(), Q.get_int8_config()):
        with pytest.raises(ValueError, match=r"'a\.weight'.*element 391"):
            Q.quantize_layer({"a.weight": w}, cfg)
    w[3, 7] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        Q.quantize_layer({"a.weight": w}, Q.get_nf4_config())
    with pytest.raises(ValueError, match="blocksize"):
        Q.get_nf4_config(blocksize=100)
    with pytest.raises(ValueError, match="mode"):
        Q.QuantizationConfig("fp3")
    with pytest.raises(ValueError, match="bfloat16, float16 or float32"):
        Q.quantize_tensor("a.weight", torch.ones(64, 64, dtype=torch.int32), Q.get_nf4_config())
    # Integer and small tensors are kept as they are.
    q = Q.quantize_layer({"ids.weight": torch.ones(128, 128, dtype=torch.int32),
                          "norm.weight": torch.ones(4096), "small.weight": torch.ones(8, 8)}, Q.get_nf4_config())
    assert q["ids.weight"].dtype == torch.int32 and json.loads(q.metadata["quantization"])["tensors"] == {}
    # Already quantized: refused.
    q = Q.quantize_layer({"a.weight": torch.randn(128, 128)}, Q.get_nf4_config())
    with pytest.raises(ValueError, match="already quantized"):
        Q.quantize_layer(q, Q.get_int8_config())
    # Element counts that are not a multiple of the blocksize: the last block is shorter (as bitsandbytes).
    q = Q.quantize_layer({"a.weight": torch.randn(65, 65)}, Q.get_nf4_config(min_elements=1))
    assert tuple(q["a.weight"].shape) == ((65 * 65 + 1) // 2, 1) and q["a.weight.absmax"].numel() == 67
    # A record that does not match the stored weight is refused before anything is allocated.
    q = Q.quantize_layer({"a.weight": torch.randn(128, 128)}, Q.get_nf4_config())
    bad = Q.QuantizedTensors(q, {"quantization": q.metadata["quantization"].replace("[128,128]", "[1099511627776,1024]")})
    with pytest.raises(ValueError, match="does not match its recorded shape"):
        Q.dequantize(bad)
    # Buffers of the wrong size are refused by the kernels, never overrun.
    with pytest.raises(ValueError, match="bytes but"):
        Q._q.quantize_nf4(np.zeros(10, np.float32), "F32", 100, 64, np.zeros(50, np.uint8), np.zeros(2, np.float32))


# ---- modules --------------------------------------------------------------------------------------

class TinyLlamaLayer(torch.nn.Module if torch is not None else object):
    """A Llama decoder layer written out (RMSNorm, rotary-free attention with GQA, SwiGLU MLP)."""

    def __init__(self, h=256, inter=688, heads=4, kv=2):
        super().__init__()
        self.h, self.heads, self.kv = h, heads, kv
        d = h // heads
        self.input_layernorm = torch.nn.Parameter(torch.ones(h))
        self.q_proj = torch.nn.Linear(h, heads * d, bias=False)
        self.k_proj = torch.nn.Linear(h, kv * d, bias=False)
        self.v_proj = torch.nn.Linear(h, kv * d, bias=False)
        self.o_proj = torch.nn.Linear(heads * d, h, bias=False)
        self.post_attention_layernorm = torch.nn.Parameter(torch.ones(h))
        self.gate_proj = torch.nn.Linear(h, inter, bias=False)
        self.up_proj = torch.nn.Linear(h, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, h, bias=False)

    @staticmethod
    def _norm(x, w):
        v = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(v + 1e-6)).to(x.dtype) * w

    def forward(self, x):
        b, t, _ = x.shape
        d = self.h // self.heads
        y = self._norm(x, self.input_layernorm)
        q = self.q_proj(y).view(b, t, self.heads, d).transpose(1, 2)
        k = self.k_proj(y).view(b, t, self.kv, d).transpose(1, 2).repeat_interleave(self.heads // self.kv, 1)
        v = self.v_proj(y).view(b, t, self.kv, d).transpose(1, 2).repeat_interleave(self.heads // self.kv, 1)
        att = torch.softmax((q.float() @ k.float().transpose(-1, -2)) / d ** 0.5, -1).to(x.dtype)
        x = x + self.o_proj((att @ v).transpose(1, 2).reshape(b, t, self.h))
        y = self._norm(x, self.post_attention_layernorm)
        return x + self.down_proj(torch.nn.functional.silu(self.gate_proj(y)) * self.up_proj(y))


def llama_layer(seed=0):
    torch.manual_seed(seed)
    layer = TinyLlamaLayer()
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return layer.to(torch.bfloat16)


def test_quantized_llama_layer_forward_is_close_to_bf16():
    import copy
    layer = llama_layer()
    # Forward in float32 (the same bf16 weights, exactly) so that bf16 rounding of the residual sum
    # does not hide the layer's contribution; the quantized layer computes with its dequantized bf16
    # weights cast to float32.
    x = torch.randn(2, 16, 256)
    ref = copy.deepcopy(layer).float()(x)
    # Tolerance on the layer's own contribution (output minus the residual input), relative: each
    # quantized weight carries ~9% RMS error (nf4 on normal weights; int8 ~0.8%), and the layer applies
    # two quantized projections in series (v then o; gate/up then down, with the product gate*up), so
    # about sqrt(3) x 9% ~ 16% is expected for nf4 and ~1.5% for int8.
    # A wrong code or scale would give errors near 100%.
    for cfg, tol in ((Q.get_nf4_config(), 0.25), (Q.get_int8_config(), 0.025)):
        q = Q.quantize_layer(layer, cfg)
        kinds = {type(m).__name__ for m in q.modules()}
        assert ("Linear4bit" if cfg.mode == "nf4" else "LinearInt8") in kinds and "Linear" not in kinds
        out = q(x).float()
        rel = float((out - ref).norm() / (ref - x.float()).norm())
        assert rel < tol, (cfg.mode, rel)
        plain = Q.dequantize(q)
        assert not Q.is_quantized(plain)
        xb = x.to(torch.bfloat16)
        assert torch.equal(plain(xb), q(xb))
        print(f"quantized Llama layer ({cfg.mode}): relative error of the layer's contribution {rel:.4f}")
        assert set(q.state_dict()) >= {"q_proj.weight", "q_proj.weight.absmax"} if cfg.mode == "nf4" else True


def test_cache_round_trip_and_mode_check(tmp_path):
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    layer = llama_layer(1)
    q = Q.quantize_layer(layer, Q.get_nf4_config())
    assert cache.cache_layer("m", 0, q, quantization_mode="nf4")
    got = cache.get_layer("m", 0, quantization_mode="nf4")
    assert got is not None
    tensors = dict(got.state_dict()) if isinstance(got, torch.nn.Module) else dict(got)
    for name, t in q.state_dict().items():
        assert torch.equal(tensors[name], t), name
    md = getattr(got, "metadata", None) or {}
    info = Q.quantization_info(got) or Q.quantization_info(md)
    assert info["mode"] == "nf4" and "q_proj.weight" in info["tensors"]


def test_exported_file_reloads_equal(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    if not cli:
        pytest.skip("LAYERCACHE_CLI is not set (ctest sets it)")
    cache_dir = tmp_path / "c"
    cache = layercache.LayerCache(cache_dir=str(cache_dir))
    w = bf16_tensor(random_bf16((256, 512), seed=5))
    q = Q.quantize_layer({"mlp.up_proj.weight": w, "norm.weight": torch.ones(256)}, Q.get_nf4_config())
    assert cache.cache_layer("m", 3, q, quantization_mode="nf4")
    del cache
    out = tmp_path / "layer.safetensors"
    subprocess.run([cli, "--cache-dir", str(cache_dir), "get", "m", "3", "--quant", "nf4", "-o", str(out)],
                   check=True, capture_output=True)
    data = out.read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hlen])
    body = data[8 + hlen:]
    meta = header.pop("__metadata__", {})
    assert json.loads(meta["quantization"])["mode"] == "nf4"
    np_types = {"U8": np.uint8, "F32": np.float32, "BF16": np.uint16}
    loaded = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        loaded[name] = torch.from_numpy(np.frombuffer(body[a:b], dtype=np_types[h["dtype"]]).reshape(h["shape"]).copy())
    for name, t in q.items():
        ref = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        assert np.array_equal(loaded[name].numpy(), ref), name
    info = Q.quantization_info(meta)
    again = Q.dequantize_tensor("mlp.up_proj.weight", loaded, info)
    assert torch.equal(again, Q.dequantize(q)["mlp.up_proj.weight"])


# ---- the CLI: put --quantize, fetch --quant, ls/stats per mode ------------------------------------

def write_safetensors(path, tensors):
    """Writes {name: bf16/float tensor} as a safetensors file (format written out by hand)."""
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        data = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).contiguous().numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def read_safetensors(path):
    data = open(path, "rb").read()
    hlen = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    types = {"U8": np.uint8, "I8": np.int8, "F32": np.float32, "BF16": np.uint16, "F16": np.float16}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[8 + hlen + a:8 + hlen + b], dtype=types[h["dtype"]]).reshape(h["shape"])
    return out, meta


def as_numpy(t):
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def cli_or_skip():
    cli = os.environ.get("LAYERCACHE_CLI")
    if not cli:
        pytest.skip("LAYERCACHE_CLI is not set (ctest sets it)")
    return cli


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def test_cli_put_quantize_matches_the_python_quantizer(tmp_path):
    cli = cli_or_skip()
    tensors = {"self_attn.q_proj.weight": bf16_tensor(random_bf16((256, 256), seed=11)),
               "mlp.down_proj.weight": bf16_tensor(random_bf16((256, 688), seed=12)),
               "input_layernorm.weight": torch.ones(256, dtype=torch.bfloat16)}
    src = tmp_path / "layer.safetensors"
    write_safetensors(src, tensors)
    c = tmp_path / "c"
    # A plain file under a quantization mode is refused, with the fix in the message.
    bad = subprocess.run([cli, "--cache-dir", c, "put", "m", "0", src, "--quant", "nf4"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--quantize" in bad.stderr, bad.stderr
    for mode, cfg in (("nf4", Q.get_nf4_config()), ("int8", Q.get_int8_config())):
        run(cli, "--cache-dir", c, "put", "m", "0", src, "--quant", mode, "--quantize")
        out = tmp_path / f"{mode}.safetensors"
        run(cli, "--cache-dir", c, "get", "m", "0", "--quant", mode, "-o", out)
        got, meta = read_safetensors(out)
        want = Q.quantize_layer(tensors, cfg)
        assert sorted(got) == sorted(want), mode
        for name, t in want.items():
            assert np.array_equal(got[name], as_numpy(t)), (mode, name)
        assert json.loads(meta["quantization"]) == json.loads(want.metadata["quantization"])
        # Re-putting the exported (quantized) file under its mode needs no --quantize.
        run(cli, "--cache-dir", c, "put", "m", "1", out, "--quant", mode)
    run(cli, "--cache-dir", c, "put", "m", "0", src)
    listing = run(cli, "--cache-dir", c, "ls")
    assert "quantization nf4: 2 entries" in listing and "quantization int8: 2 entries" in listing, listing
    assert "quantization none: 1 entries" in listing, listing
    assert "quantization nf4: 2 entries" in run(cli, "--cache-dir", c, "stats")
    modes = json.loads(run(cli, "--cache-dir", c, "stats", "--json"))["quantization_modes"]
    assert sorted(modes) == ["int8", "nf4", "none"] and [modes[m]["entries"] for m in ("int8", "nf4", "none")] == [2, 2, 1]
    entries = json.loads(run(cli, "--cache-dir", c, "ls", "--json"))
    for mode in ("int8", "nf4", "none"):
        mine = [e for e in entries if (e["quantization_mode"] or "none") == mode]
        assert modes[mode]["size_bytes"] == sum(e["size_bytes"] for e in mine), (mode, modes, mine)
    sizes = {e["quantization_mode"]: e["size_bytes"] for e in json.loads(run(cli, "--cache-dir", c, "ls", "--json"))}
    assert sizes[None] / sizes["nf4"] > 3.0 and 1.7 < sizes[None] / sizes["int8"] < 2.1, sizes


def test_cli_fetch_quant_caches_only_quantized_bytes(tmp_path):
    import socket
    import time
    cli = cli_or_skip()
    repo = tmp_path / "hub"
    repo.mkdir()
    tensors = {}
    for i in range(2):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = bf16_tensor(random_bf16((128, 128), seed=20 + i))
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = bf16_tensor(random_bf16((344, 128), seed=30 + i))
        tensors[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(128, dtype=torch.bfloat16)
    write_safetensors(repo / "model.safetensors", tensors)
    (repo / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([cli, "serve", repo, "--repo-id", "t/tiny", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server.stdout.readline()  # "serving ..." once it listens
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_OFFLINE="0")
        c = tmp_path / "c"
        subprocess.run([cli, "--cache-dir", c, "fetch", "t/tiny", "--model-id", "tiny", "--quant", "nf4", "--quiet"],
                       check=True, capture_output=True, env=env)
        entries = json.loads(run(cli, "--cache-dir", c, "ls", "--json"))
        assert sorted((e["layer_index"], e["quantization_mode"]) for e in entries) == [(0, "nf4"), (1, "nf4")]
        # The entry file (a safetensors file; the Hub layer's key has the commit as revision).
        got, meta = read_safetensors([e["path"] for e in entries if e["layer_index"] == 1][0])
        layer1 = {k[len("model.layers.1."):]: v for k, v in tensors.items() if k.startswith("model.layers.1.")}
        want = Q.quantize_layer(layer1, Q.get_nf4_config())
        for name, t in want.items():
            assert np.array_equal(got[name], as_numpy(t)), name
        # No unquantized copy anywhere in the cache's files.
        raw = as_numpy(tensors["model.layers.1.mlp.up_proj.weight"]).tobytes()[:4096]
        for root, _, files in os.walk(c):
            for f in files:
                assert raw not in open(os.path.join(root, f), "rb").read(), f
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---- the cache's layers: families, dequantize=True, mode check, download_and_cache ----------------

HERE = os.path.dirname(os.path.abspath(__file__))


def run_fresh(code, env=None):
    """Runs `code` in a new /usr/bin/python3-like interpreter importing the same layercache."""
    import textwrap
    build_py = os.path.dirname(os.path.dirname(layercache.__file__))
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([build_py, HERE]), **(env or {}))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_quantized_family_layer_in_a_new_process(tmp_path, family):
    import synthetic_models as sm
    ckpt = tmp_path / "ckpt"
    sm.write_model(str(ckpt), family, layers=2, hidden=128)
    cache_dir = str(tmp_path / "cache")
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.import_checkpoint(str(ckpt), "m")
    plain = c.get_layer("m", 1)
    q = Q.quantize_layer(plain, Q.get_nf4_config())
    assert type(q).__name__ == type(plain).__name__
    assert c.cache_layer("m", 1, q, quantization_mode="nf4")
    out = run_fresh(f"""
        import torch, layercache
        from layercache import quantization as Q
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        q = c.get_layer("m", 1, quantization_mode="nf4")
        p = c.get_layer("m", 1)
        d = c.get_layer("m", 1, quantization_mode="nf4", dequantize=True)
        torch.manual_seed(0)
        x = torch.randn(1, 6, 128).to(torch.bfloat16)
        yq, yp, yd = q(x), p(x), d(x)
        kinds = sorted({{type(m).__name__ for m in q.modules()}})
        err = float((yq.float() - yp.float()).norm() / (yp.float() - x.float()).norm())
        print(type(q).__name__, "Linear4bit" in kinds, Q.is_quantized(d), torch.equal(yq, yd), err < 0.3)
        try:
            c.get_layer("m", 1, quantization_mode="int8")
        except ValueError as e:
            print("int8-miss-is-None")
    """)
    name = {"qwen2": "Qwen2DecoderLayer", "gpt2": "GPT2Block"}[family]
    assert out.split()[:5] == [name, "True", "False", "True", "True"], out


def test_a_stored_mode_mismatch_is_a_clear_error(tmp_path):
    c = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    plain = {"a.weight": torch.randn(128, 128).to(torch.bfloat16)}
    # The C++ cache refuses an entry under "nf4" whose tensors are not quantized (only labelled)...
    entries = [layercache._tensor_entry(k, v) for k, v in plain.items()]
    assert not c._core.cache_layer("m", 0, layercache._core.build_layer(entries, {}), "nf4", "")
    assert c.get_layer("m", 0, quantization_mode="nf4") is None
    # ... and get_layer checks what it reads (an entry written by an older version): the same check.
    with pytest.raises(ValueError, match="not quantized"):
        Q.check_mode({}, "nf4")
    with pytest.raises(ValueError, match="stored layer is 'nf4'"):
        Q.check_mode(Q.quantize_layer(plain, Q.get_nf4_config()), "int8")
    # cache_layer quantizes a plain layer given "nf4"/"int8", and refuses a quantized one under another mode.
    assert c.cache_layer("m", 1, plain, quantization_mode="int8")
    assert Q.quantization_info(c.get_layer("m", 1, quantization_mode="int8"))["mode"] == "int8"
    with pytest.raises(ValueError, match="quantized as 'nf4'"):
        c.cache_layer("m", 2, Q.quantize_layer(plain, Q.get_nf4_config()), quantization_mode="int8")
    with pytest.raises(ValueError, match="quantized as 'nf4'"):
        c.cache_layer("m", 2, Q.quantize_layer(plain, Q.get_nf4_config()))
    # A label that is not a quantization mode stays a label for plain layers.
    assert c.cache_layer("m", 3, plain, quantization_mode="my-label")
    assert torch.equal(c.get_layer("m", 3, quantization_mode="my-label")["a.weight"], plain["a.weight"])


def test_download_and_cache_quantizes_before_caching(tmp_path):
    import socket
    import time
    import synthetic_models as sm
    cli = cli_or_skip()
    repo = tmp_path / "repo"
    sm.write_model(str(repo), "llama", layers=2, hidden=128)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([cli, "serve", str(repo), "--repo-id", "org/tiny", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)  # waiting for the server to listen, not synchronising the test
        cache_dir = str(tmp_path / "cache")
        out = run_fresh(f"""
            import json, torch, layercache
            from layercache import quantization as Q
            c = layercache.LayerCache(cache_dir={cache_dir!r})
            q = c.download_and_cache("tiny", 1, "org/tiny", quantization_mode="nf4")
            p = c.download_and_cache("tiny", 1, "org/tiny")
            x = torch.randn(1, 4, 128).to(torch.bfloat16)
            err = float((q(x).float() - p(x).float()).norm() / (p(x).float() - x.float()).norm())
            sizes = {{e["quantization_mode"]: e["size_bytes"] for e in []}}
            print(type(q).__name__, Q.quantization_info(q)["mode"], err < 0.3)
        """, env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"})
        assert out.split() == ["LlamaDecoderLayer", "nf4", "True"], out
        entries = json.loads(subprocess.run([cli, "--cache-dir", cache_dir, "ls", "--json"], check=True,
                                            capture_output=True, text=True).stdout)
        size = {e["quantization_mode"]: e["size_bytes"] for e in entries if e["layer_index"] == 1}
        assert size[None] / size["nf4"] > 2.5, size  # small layer: the header weighs more than at 7B
    finally:
        server.terminate()
        server.wait(timeout=10)


def _doc_block(path, heading):
    """The first ```python block after `heading` in a document of the repository."""
    text = open(os.path.join(HERE, "..", "..", path), encoding="utf-8").read()
    at = text.index(heading)
    start = text.index("```python\n", at) + len("```python\n")
    return text[start:text.index("```", start)]


@pytest.mark.parametrize("path,heading", [("README.md", "## Quantized layers (nf4, int8)"),
                                          ("docs/PYTHON.md", "## Quantized layers (")])
def test_the_seed_quantization_example_runs_as_written_in_a_new_process(tmp_path, path, heading):
    import synthetic_models as sm
    block = _doc_block(path, heading)
    assert "quantize_layer(layer, config)" in block and 'quantization_mode="nf4"' in block, block
    ckpt = tmp_path / "ckpt"
    sm.write_model(str(ckpt), "llama", layers=6, hidden=128)
    # `model.layers`: the seed's decoder layers, as layercache returns them; then the example verbatim,
    # with the default cache directory (HOME points into tmp_path).
    prologue = f"""
import torch, layercache
src = layercache.LayerCache(cache_dir={str(tmp_path / "src")!r})
src.import_checkpoint({str(ckpt)!r}, "src")
class Model:
    layers = [src.get_layer("src", i) for i in range(6)]
model = Model()
"""
    epilogue = """
from layercache import quantization as Q
torch.manual_seed(0)
x = torch.randn(1, 5, 128).to(torch.bfloat16)
y, ref = layer(x), model.layers[5](x)
y, ref = (y[0] if isinstance(y, tuple) else y), (ref[0] if isinstance(ref, tuple) else ref)
err = float((y.float() - ref.float()).norm() / (ref.float() - x.float()).norm())
kinds = {type(m).__name__ for m in layer.modules()}
print(type(layer).__name__, "Linear4bit" in kinds, Q.quantization_info(layer)["mode"], err < 0.3)
"""
    code = prologue + block + epilogue
    out = run_fresh(code, env={"HOME": str(tmp_path / "home"), "LAYERCACHE_DIR": ""})
    assert out.split() == [type(layercache.LayerCache(cache_dir=str(tmp_path / "src")).get_layer("src", 5)).__name__,
                           "True", "nf4", "True"], out
    assert any((tmp_path / "home" / ".cache" / "nexus" / "layers").rglob("*")), "the default cache directory was used"
