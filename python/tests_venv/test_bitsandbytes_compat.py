"""layercache.quantization against bitsandbytes itself (PyPI, its CPU backend), run with the test
virtualenv (scripts/venv-pytest.sh; ctest bitsandbytes_compat): NF4 codes, absmax, quant state and
dequantized values bit-identical; int8 codes, SCB and dequantized values bit-identical; nested
quantization (codes, absmax, nested absmax, offset, dequantized values) bit-identical at 1-3 PyTorch
threads; a bitsandbytes Linear4bit loads our tensors and computes the same."""
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


NESTED_CASES = CASES + [((2048, 1100), 64, torch.bfloat16), ((4096, 4104), 64, torch.float16)]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,blocksize,dtype", NESTED_CASES)
def test_nested_quantization_is_bit_identical_to_bitsandbytes(shape, blocksize, dtype, threads):
    # The offset is torch.mean(absmax), whose float32 sum PyTorch splits by its intra-op thread
    # count above 32768 blocks (the last two cases have 35200 and 262656): run with 1, 2 and 3.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        w = weight(shape, dtype, 7 + blocksize + threads)
        q, state = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
        ours = Q.quantize_tensor("w", w, Q.get_nf4_config(blocksize=blocksize, double_quant=True))
        assert torch.equal(q.view(-1), ours["w"].view(-1)), "packed codes"
        assert torch.equal(state.absmax, ours["w.absmax"]), "the nested 8-bit codes of absmax"
        assert torch.equal(state.state2.absmax, ours["w.nested_absmax"]), "nested absmax"
        assert torch.equal(state.state2.code, ours["w.nested_quant_map"]), "the dynamic map"
        theirs_state = bytes(state.as_dict(packed=True)["quant_state.bitsandbytes__nf4"].tolist())
        assert theirs_state == bytes(ours["w.quant_state.bitsandbytes__nf4"].tolist()), "quant state (offset)"
        info = {"mode": "nf4", "blocksize": blocksize, "nested": True,
                "tensors": {"w": {"dtype": NAMES[dtype], "shape": list(shape)}}}
        assert torch.equal(bits(F.dequantize_4bit(q, state)), bits(Q.dequantize_tensor("w", ours, info, dtype)))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 7, 8, 15, 17, 63, 64, 65, 100, 1000, 4097, 32767, 32768, 40000, 100003, 262144])
def test_nested_offset_is_torch_mean(n, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(n, generator=torch.Generator().manual_seed(n)) * 0.05
        ours = Q._q.nested_offset(x.numpy(), n, threads)
        assert torch.tensor(ours, dtype=torch.float32).view(torch.int32) == x.mean().view(torch.int32)
    finally:
        torch.set_num_threads(before)


def test_a_zero_block_of_absmax_gets_code_0_as_in_bitsandbytes():
    centered = torch.zeros(600)
    centered[300:] = torch.linspace(-1, 1, 300)
    q, state = F.quantize_blockwise(centered, blocksize=256)
    import numpy as np
    codes = np.empty(600, np.uint8)
    nested = np.empty(3, np.float32)
    Q._q.quantize_blockwise8(centered.numpy(), 600, 256, codes, nested)
    assert np.array_equal(codes, q.numpy()) and np.array_equal(nested, state.absmax.numpy())


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


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_a_transformers_gpt2_block_is_quantized_as_transformers_hands_it_to_bitsandbytes(mode):
    # GPT-2's Conv1D stores its weight as [in, out]; transformers transposes it to [out, in] before
    # bitsandbytes quantizes it (and runs a Linear4bit / Linear8bitLt): the same bytes here.
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    torch.manual_seed(1)
    cfg = GPT2Config(n_embd=256, n_head=4, n_inner=1024, attn_pdrop=0.0, resid_pdrop=0.0)
    block = GPT2Block(cfg).to(torch.bfloat16).eval()
    config = Q.get_nf4_config() if mode == "nf4" else Q.get_int8_config()
    q = Q.quantize_layer(block, config)
    info = Q.quantization_info(q)
    for path in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        w = block.get_submodule(path).weight.detach()
        mod = q.get_submodule(path)
        assert info["tensors"][path + ".weight"] == {"dtype": "BF16", "shape": [w.shape[1], w.shape[0]], "transposed": True}
        sd = mod.state_dict()
        if mode == "nf4":
            qt, state = F.quantize_4bit(w.t().contiguous(), blocksize=64, quant_type="nf4")
            assert torch.equal(sd["weight"].view(-1), qt.view(-1)) and torch.equal(sd["weight.absmax"], state.absmax), path
            assert json.loads(bytes(sd["weight.quant_state.bitsandbytes__nf4"].tolist()))["shape"] == [w.shape[1], w.shape[0]]
            theirs = F.dequantize_4bit(qt, state)
        else:
            cb, scb, _ = F.int8_vectorwise_quant(w.t().contiguous())
            assert torch.equal(sd["weight"], cb) and torch.equal(sd["SCB"], scb), path
            theirs = F.int8_vectorwise_dequant(cb, scb).to(torch.bfloat16)
        assert torch.equal(bits(mod.dequantized_weight()), bits(theirs)), path
    # The quantized block computes what the block computes with bitsandbytes' dequantized weights.
    ref = GPT2Block(cfg).to(torch.bfloat16).eval()
    ref.load_state_dict(block.state_dict())
    for path in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        ref.get_submodule(path).weight.data = q.get_submodule(path).dequantized_weight().t().contiguous()
    x = torch.randn(2, 7, 256).to(torch.bfloat16)
    with torch.no_grad():
        got, want, plain = q(x)[0], ref(x)[0], block(x)[0]
    assert (got.float() - want.float()).abs().max() <= 0.02 * want.float().abs().max()
    assert (got.float() - plain.float()).norm() < 0.3 * (plain.float() - x.float()).norm()
    # dequantize() gives GPT-2's layout back: [in, out] weights equal to the transposed dequantized ones.
    d = Q.dequantize(q)
    for path in ("attn.c_attn", "mlp.c_proj"):
        assert d.get_submodule(path).weight.shape == block.get_submodule(path).weight.shape
        assert torch.equal(d.get_submodule(path).weight, q.get_submodule(path).dequantized_weight().t())
    with torch.no_grad():
        assert torch.allclose(d(x)[0].float(), got.float(), atol=0.02 * float(got.float().abs().max()))
