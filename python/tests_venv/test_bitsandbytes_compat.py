"""layercache.quantization against bitsandbytes itself (PyPI, its CPU backend), run with the test
virtualenv (scripts/venv-pytest.sh; ctest bitsandbytes_compat): NF4 codes, absmax, quant state and
dequantized values bit-identical; int8 codes, SCB and dequantized values bit-identical; nested
quantization within bitsandbytes' CPU backend's own approximations (see
include/layercache/quantization.h); a bitsandbytes Linear4bit loads our tensors and computes the same."""
import json
import sys

import pytest

try:
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch
except ImportError as e:  # the venv must have them: a failure, not a skip, in CI
    import os
    if os.environ.get("CI", "") not in ("", "0", "false"):
        raise
    pytest.skip(f"bitsandbytes/torch not installed ({e}); scripts/install-python-env.sh installs them",
                allow_module_level=True)

from layercache import quantization as Q

CASES = [((512, 256), 64, torch.bfloat16), ((300, 77), 64, torch.bfloat16), ((1000, 33), 128, torch.float16),
         ((4096, 11), 32, torch.float32), ((3, 5), 64, torch.bfloat16), ((11008, 512), 64, torch.bfloat16),
         ((64, 4096), 4096, torch.bfloat16), ((129, 257), 256, torch.float16)]
NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def weight(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(*shape, generator=g) * 0.02).to(dtype)
    if w.numel() > 300:
        w.view(-1)[:100] = 0  # an all-zero block
        w.view(-1)[200] = 0.5  # an outlier
    return w


def bits(t):
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("shape,blocksize,dtype", CASES)
def test_nf4_is_bit_identical_to_bitsandbytes(shape, blocksize, dtype):
    w = weight(shape, dtype, sum(shape) + blocksize)
    q, state = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=False)
    ours = Q.quantize_tensor("w", w, Q.get_nf4_config(blocksize=blocksize))
    assert torch.equal(q.view(-1), ours["w"].view(-1)), "packed codes"
    assert tuple(q.shape) == tuple(ours["w"].shape)
    assert torch.equal(state.absmax, ours["w.absmax"]), "absmax"
    assert torch.equal(state.code, ours["w.quant_map"]), "quant_map"
    packed = state.as_dict(packed=True)
    assert bytes(packed["quant_state.bitsandbytes__nf4"].tolist()) == bytes(ours["w.quant_state.bitsandbytes__nf4"].tolist())
    info = {"mode": "nf4", "blocksize": blocksize, "nested": False, "tensors": {"w": {"dtype": NAMES[dtype], "shape": list(shape)}}}
    for out in (torch.bfloat16, torch.float16, torch.float32):
        theirs = F.dequantize_4bit(q, state).to(torch.float32).to(out) if out != dtype else F.dequantize_4bit(q, state)
        if out == dtype:
            assert torch.equal(bits(theirs), bits(Q.dequantize_tensor("w", ours, info, out))), out


@pytest.mark.parametrize("shape,blocksize,dtype", CASES[:5])
def test_nested_quantization_against_bitsandbytes(shape, blocksize, dtype):
    w = weight(shape, dtype, 7 + blocksize)
    q, state = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
    ours = Q.quantize_tensor("w", w, Q.get_nf4_config(blocksize=blocksize, double_quant=True))
    assert torch.equal(q.view(-1), ours["w"].view(-1))
    assert torch.equal(state.state2.code, ours["w.nested_quant_map"]), "the dynamic map"
    ostate = json.loads(bytes(ours["w.quant_state.bitsandbytes__nf4"].tolist()))
    tstate = json.loads(bytes(state.as_dict(packed=True)["quant_state.bitsandbytes__nf4"].tolist()))
    assert {k: v for k, v in ostate.items() if k != "nested_offset"} == {k: v for k, v in tstate.items() if k != "nested_offset"}
    # The offset: bitsandbytes sums in float32 (torch.mean), we sum in double: within one ulp.
    off_t = torch.tensor(tstate["nested_offset"], dtype=torch.float32)
    off_o = torch.tensor(ostate["nested_offset"], dtype=torch.float32)
    assert abs(off_t.view(torch.int32).item() - off_o.view(torch.int32).item()) <= 1
    # The 8-bit step, given bitsandbytes' own offset: their CPU kernel picks codes through a 65536-bin
    # table, we pick the nearest code as their CUDA kernel does. Codes agree except for a few (the table
    # is coarse where the dynamic map is dense, near 0), each one step apart.
    absmax = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")[1].absmax
    centered = (absmax - state.offset).float().contiguous().numpy()
    import numpy as np
    codes = np.empty(centered.size, np.uint8)
    nested = np.empty(-(-centered.size // 256), np.float32)
    Q._q.quantize_blockwise8(centered, centered.size, 256, codes, nested)
    theirs = state.absmax.numpy()
    assert np.array_equal(nested, state.state2.absmax.numpy()), "nested absmax"
    differ = codes != theirs
    zero_blocks = nested == 0
    if zero_blocks.any():  # an all-zero block: their code 0, ours the map's 0.0; both dequantize to 0
        differ &= ~np.repeat(zero_blocks, 256)[: codes.size]
    assert differ.mean() <= 0.05, differ.mean()  # measured: up to 2%
    assert np.all(np.abs(codes[differ].astype(int) - theirs[differ].astype(int)) == 1)


@pytest.mark.parametrize("shape,dtype", [((512, 256), torch.bfloat16), ((300, 77), torch.float16),
                                         ((64, 11008), torch.bfloat16), ((33, 40), torch.float32)])
def test_int8_is_bit_identical_to_bitsandbytes(shape, dtype):
    w = weight(shape, dtype, 3)
    w[5] = 0.01  # a row of equal values
    cb, scb, _ = F.int8_vectorwise_quant(w.clone())
    ours = Q.quantize_tensor("m.weight", w, Q.get_int8_config())
    assert torch.equal(cb, ours["m.weight"]), "int8 codes"
    assert torch.equal(scb, ours["m.SCB"]), "SCB"
    info = {"mode": "int8", "tensors": {"m.weight": {"dtype": "F32", "shape": list(shape)}}}
    assert torch.equal(F.int8_vectorwise_dequant(cb, scb), Q.dequantize_tensor("m.weight", ours, info))


def test_a_bitsandbytes_linear4bit_loads_our_tensors():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128, bias=True).to(torch.bfloat16)
    ours = Q.quantize_layer(lin, Q.get_nf4_config(min_elements=1))
    sd = ours.state_dict()
    assert set(sd) == {"weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__nf4", "bias"}
    # bitsandbytes rebuilds its QuantState from exactly these tensors (as transformers does on load).
    qs = F.QuantState.from_dict({k[len("weight."):]: v for k, v in sd.items() if k.startswith("weight.")},
                                device=torch.device("cpu"))
    assert qs.blocksize == 64 and qs.quant_type == "nf4" and qs.dtype == torch.bfloat16 and tuple(qs.shape) == (128, 256)
    theirs = F.dequantize_4bit(sd["weight"], qs)
    assert torch.equal(bits(theirs), bits(ours.dequantized_weight()))
    x = torch.randn(4, 256).to(torch.bfloat16)
    assert torch.equal(ours(x), torch.nn.functional.linear(x, theirs, lin.bias))
