"""Quantized layers: bitsandbytes' NF4 (QLoRA) and LLM.int8() formats, computed by layercache's C++
kernels (AVX2 or scalar, GIL released), bit-identical to bitsandbytes.

    from layercache.quantization import get_nf4_config, quantize_layer, dequantize
    q = quantize_layer(layer, get_nf4_config())         # nn.Module or dict of tensors
    cache.cache_layer("qwen-7b", 5, q, quantization_mode="nf4")
    layer = cache.get_layer("qwen-7b", 5, quantization_mode="nf4")   # Linear4bit inside
    y = layer(x)                                        # weights dequantized in forward

The formats (docs/PYTHON.md, include/layercache/quantization.h):

- ``nf4``: each quantized weight ``W`` (``<name>``) becomes the tensors transformers writes for a
  bitsandbytes ``Linear4bit``: ``<name>`` (uint8 [ceil(n/2), 1], first element in the high nibble),
  ``<name>.absmax`` (float32 per block of ``blocksize`` elements; uint8 when nested),
  ``<name>.quant_map`` (the 16 NF4 values), ``<name>.nested_absmax`` and
  ``<name>.nested_quant_map`` (nested only) and ``<name>.quant_state.bitsandbytes__nf4`` (JSON).
- ``int8``: ``<module>.weight`` (int8, same shape), ``<module>.SCB`` (float32 per row),
  ``<module>.weight_format`` (uint8 0), as bitsandbytes' ``Linear8bitLt`` state_dict.

Which weights: floating-point 2-D ``...weight`` tensors with at least ``min_elements`` elements,
not norms, not embeddings / lm_head unless ``quantize_embeddings``; in a module, only those of
``nn.Linear``-like modules (``Linear``, GPT-2's ``Conv1D``). The rest is kept as it is. The quantized
layer records what it did under the metadata key ``"quantization"`` (mode, blocksize, nested, each
weight's original dtype and shape); the cache stores it with the entry.
"""

import copy
import json

import numpy as np

from . import _core

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional for dicts of numpy arrays
    torch = None

__all__ = ["QuantizationConfig", "get_nf4_config", "get_int8_config", "config_for_mode", "quantize_layer",
           "dequantize", "dequantize_layer", "quantize_tensor", "dequantize_tensor", "is_quantized",
           "quantization_info", "Linear4bit", "LinearInt8", "QuantizedTensors", "QUANT_KEY", "kernel_name"]

_q = _core.quant
QUANT_KEY = "quantization"
_STATE = ".quant_state.bitsandbytes__nf4"
_NESTED_BLOCKSIZE = 256
MODES = ("nf4", "int8")


def kernel_name():
    """"avx2" or "scalar": the C++ kernel in use (LAYERCACHE_QUANT_KERNEL=scalar forces scalar)."""
    return _q.kernel_name()


class QuantizationConfig:
    """How to quantize. ``mode`` "nf4" or "int8"; for nf4 ``blocksize`` (32..4096, a power of two,
    default 64) and ``double_quant`` (nested quantization of the absmax values); ``min_elements``:
    smaller weights are kept as they are; ``quantize_embeddings``: also embed/lm_head weights;
    ``threads``: 0 for all hardware threads."""

    def __init__(self, mode="nf4", blocksize=64, double_quant=False, min_elements=4096,
                 quantize_embeddings=False, threads=0):
        mode = str(mode).lower()
        if mode not in MODES:
            raise ValueError(f"quantization mode must be 'nf4' or 'int8', got {mode!r}")
        blocksize = int(blocksize)
        if mode == "nf4" and blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"nf4 blocksize must be one of 32, 64, ..., 4096 (as bitsandbytes), got {blocksize}")
        if int(min_elements) < 1 or int(threads) < 0:
            raise ValueError("min_elements must be >= 1 and threads >= 0")
        self.mode = mode
        self.blocksize = blocksize if mode == "nf4" else 0
        self.double_quant = bool(double_quant) and mode == "nf4"
        self.min_elements = int(min_elements)
        self.quantize_embeddings = bool(quantize_embeddings)
        self.threads = int(threads)

    @property
    def nested(self):
        return self.double_quant

    def __repr__(self):
        return (f"QuantizationConfig(mode={self.mode!r}, blocksize={self.blocksize}, "
                f"double_quant={self.double_quant}, min_elements={self.min_elements}, "
                f"quantize_embeddings={self.quantize_embeddings})")

    def __eq__(self, other):
        return isinstance(other, QuantizationConfig) and vars(self) == vars(other)


def get_nf4_config(blocksize=64, double_quant=False, **kwargs):
    """The seed's NF4 configuration (bitsandbytes' defaults: blocksize 64, no double quantization)."""
    return QuantizationConfig("nf4", blocksize=blocksize, double_quant=double_quant, **kwargs)


def get_int8_config(**kwargs):
    """LLM.int8()'s row-wise int8 weights."""
    return QuantizationConfig("int8", **kwargs)


def config_for_mode(mode):
    """The default configuration of a mode name ("nf4" or "int8")."""
    return get_nf4_config() if str(mode).lower() == "nf4" else get_int8_config() if str(
        mode).lower() == "int8" else QuantizationConfig(mode)


# ---- tensors ---------------------------------------------------------------------------------

_TORCH_NAMES = {}
if torch is not None:
    _TORCH_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
_NUMPY_NAMES = {np.dtype("float16"): "F16", np.dtype("float32"): "F32"}
_TORCH_STATE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def _dtype_name(t):
    """"BF16" / "F16" / "F32" for a float tensor or array, else None."""
    if torch is not None and isinstance(t, torch.Tensor):
        return _TORCH_NAMES.get(t.dtype)
    if isinstance(t, np.ndarray):
        return _NUMPY_NAMES.get(t.dtype)
    return None


def _raw(t):
    """A contiguous numpy view of a float tensor's bytes (bf16 as uint16)."""
    if torch is not None and isinstance(t, torch.Tensor):
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy()
        return t.numpy()
    return np.ascontiguousarray(t)


def _out(arr, like_torch):
    if like_torch and torch is not None:
        return torch.from_numpy(arr)
    return arr


def _float_out(raw, dtype_name, shape, like_torch):
    """A tensor of `dtype_name` over the raw output array (bf16 from uint16 bits)."""
    if like_torch and torch is not None:
        if dtype_name == "BF16":
            return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).reshape(shape)
        return torch.from_numpy(raw).reshape(shape)
    if dtype_name == "BF16":
        return raw.reshape(shape)  # raw bf16 bits: numpy has no bfloat16
    return raw.reshape(shape)


def _module_prefix(name):
    return name[: name.rfind(".") + 1] if "." in name else ""


def quantize_tensor(name, tensor, config):
    """The tensors a weight called `name` becomes (a dict by name, as bitsandbytes/transformers name
    them). Raises ValueError for a non-float tensor, NaN/Inf, or a bad configuration."""
    dt = _dtype_name(tensor)
    if dt is None:
        raise ValueError(f"{name!r}: only bfloat16, float16 or float32 tensors can be quantized")
    like_torch = torch is not None and isinstance(tensor, torch.Tensor)
    shape = list(tensor.shape)
    raw = _raw(tensor)
    n = int(raw.size)
    out = {}
    try:
        if config.mode == "nf4":
            bs = config.blocksize
            blocks = -(-n // bs)
            packed = np.empty((n + 1) // 2, dtype=np.uint8)
            absmax = np.empty(blocks, dtype=np.float32)
            _q.quantize_nf4(raw, dt, n, bs, packed, absmax, config.threads)
            out[name] = _out(packed.reshape(-1, 1), like_torch)
            offset = 0.0
            if config.double_quant:
                # torch.mean(absmax) as bitsandbytes computes it, bit for bit: PyTorch's float32
                # cascade sum, whose split depends on its intra-op thread count.
                offset = _q.nested_offset(absmax, blocks, _torch_threads())
                centered = (absmax - np.float32(offset)).astype(np.float32)
                codes = np.empty(blocks, dtype=np.uint8)
                nested = np.empty(-(-blocks // _NESTED_BLOCKSIZE), dtype=np.float32)
                _q.quantize_blockwise8(centered, blocks, _NESTED_BLOCKSIZE, codes, nested)
                out[name + ".absmax"] = _out(codes, like_torch)
                out[name + ".nested_absmax"] = _out(nested, like_torch)
                out[name + ".nested_quant_map"] = _out(np.array(_q.dynamic_map(), dtype=np.float32), like_torch)
            else:
                out[name + ".absmax"] = _out(absmax, like_torch)
            out[name + ".quant_map"] = _out(np.array(_q.nf4_table(), dtype=np.float32), like_torch)
            state = _q.nf4_quant_state_json(bs, dt, shape, config.double_quant, offset)
            out[name + _STATE] = _out(np.frombuffer(state.encode(), dtype=np.uint8).copy(), like_torch)
        else:
            if len(shape) != 2:
                raise ValueError(f"{name!r}: int8 quantizes 2-D weights, this one has shape {shape}")
            rows, cols = shape
            q = np.empty((rows, cols), dtype=np.int8)
            scb = np.empty(rows, dtype=np.float32)
            _q.quantize_int8(raw, dt, rows, cols, q, scb, config.threads)
            prefix = _module_prefix(name)
            out[name] = _out(q, like_torch)
            out[prefix + "SCB"] = _out(scb, like_torch)
            out[prefix + "weight_format"] = _out(np.array(0, dtype=np.uint8), like_torch)
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from None
    return out


def _torch_threads():
    """The intra-op thread count a bitsandbytes in this process would sum with (0: PyTorch's default)."""
    return torch.get_num_threads() if torch is not None else 0


def _np(t):
    if torch is not None and isinstance(t, torch.Tensor):
        return t.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(t)


def dequantize_tensor(name, tensors, info, dtype=None):
    """The weight `name` rebuilt from its quantized tensors (in `tensors`, by name) and its record
    `info` (from quantization_info()); `dtype` None: its original dtype."""
    rec = info["tensors"][name]
    shape = [int(x) for x in rec["shape"]]
    out_name = dtype if isinstance(dtype, str) else _TORCH_NAMES.get(dtype) if dtype is not None else rec["dtype"]
    if out_name not in ("BF16", "F16", "F32"):
        out_name = "F32"
    n = 1
    for d in shape:
        n *= d
    like_torch = torch is not None

    def part(key):
        if key not in tensors:
            raise ValueError(f"the quantized weight {name!r} lacks {key!r}")
        return _np(tensors[key])

    stored = part(name)
    if stored.size != ((n + 1) // 2 if info["mode"] == "nf4" else n):
        raise ValueError(f"the quantized weight {name!r} ({stored.size} values) does not match its recorded "
                         f"shape {shape}")
    raw = np.empty(n, dtype=np.float32 if out_name == "F32" else np.uint16 if out_name == "BF16" else np.float16)

    if info["mode"] == "nf4":
        bs = int(info["blocksize"])
        blocks = -(-n // bs)
        if info.get("nested"):
            state = json.loads(bytes(part(name + _STATE).tobytes()).decode())
            codes = part(name + ".absmax").astype(np.uint8, copy=False)
            nested = part(name + ".nested_absmax").astype(np.float32, copy=False)
            absmax = np.empty(blocks, dtype=np.float32)
            _q.dequantize_blockwise8(codes, nested, blocks, _NESTED_BLOCKSIZE, absmax)
            absmax = (absmax + np.float32(state["nested_offset"])).astype(np.float32)
        else:
            absmax = part(name + ".absmax").astype(np.float32, copy=False)
        _q.dequantize_nf4(stored, absmax, n, bs, out_name, raw)
    else:
        prefix = _module_prefix(name)
        rows, cols = shape
        _q.dequantize_int8(stored, part(prefix + "SCB").astype(np.float32, copy=False), rows, cols,
                           out_name, raw)
    return _float_out(raw, out_name, shape, like_torch)


# ---- what a layer records ------------------------------------------------------------------------

class QuantizedTensors(dict):
    """A quantized layer as a dict of tensors, with ``metadata`` (``metadata["quantization"]`` is the
    record) — what quantize_layer returns for a dict, and what the cache stores."""

    def __init__(self, tensors=(), metadata=None):
        super().__init__(tensors)
        self.metadata = dict(metadata or {})


def _info_json(mode, blocksize, nested, records):
    d = {"mode": mode}
    if mode == "nf4":
        d["blocksize"] = blocksize
        d["nested"] = bool(nested)
    d["tensors"] = records
    return json.dumps(d, separators=(",", ":"))


def quantization_info(layer_or_metadata):
    """The quantization record of a quantized layer (module, dict with ``metadata``, or a metadata
    dict) as a dict, or None when it is not quantized."""
    m = layer_or_metadata
    text = None
    if torch is not None and isinstance(m, torch.nn.Module):
        text = getattr(m, "_layercache_quantization", None)
        if text is None:
            recs, mode, bs, nested = {}, None, 0, False
            for prefix, child in m.named_modules():
                if isinstance(child, _QuantizedLinear):
                    p = prefix + "." if prefix else ""
                    recs[p + "weight"] = {"dtype": child.weight_dtype_name, "shape": list(child.weight_shape)}
                    if child.kind == "conv1d_t":
                        recs[p + "weight"]["transposed"] = True
                    mode, bs, nested = child.mode, getattr(child, "blocksize", 0), getattr(child, "nested", False)
            if mode is None:
                return None
            text = _info_json(mode, bs, nested, recs)
    else:
        md = getattr(m, "metadata", None)
        if isinstance(md, dict):
            text = md.get(QUANT_KEY)
        elif isinstance(m, dict) and isinstance(m.get(QUANT_KEY), str):
            text = m[QUANT_KEY]
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        raise ValueError(f"the layer's {QUANT_KEY!r} metadata is not valid JSON") from None
    if not isinstance(info, dict) or info.get("mode") not in MODES or not isinstance(info.get("tensors"), dict):
        raise ValueError(f"the layer's {QUANT_KEY!r} metadata is malformed: {text[:200]}")
    return info


def is_quantized(layer):
    return quantization_info(layer) is not None


def metadata_of(layer):
    """{"quantization": record} for a quantized layer, else {} (what cache_layer stores)."""
    info = quantization_info(layer)
    if info is None:
        return {}
    return {QUANT_KEY: _info_json(info["mode"], info.get("blocksize", 0), info.get("nested", False),
                                  info["tensors"])}


def check_mode(layer_or_metadata, requested):
    """Raises ValueError when a layer stored as one quantization mode is asked for as another."""
    req = (requested or "").lower()
    info = quantization_info(layer_or_metadata)
    stored = info["mode"] if info else None
    if req in MODES and stored != req:
        raise ValueError(f"quantization_mode={requested!r} but the stored layer is "
                         f"{'not quantized' if stored is None else stored!r}; quantize it with "
                         "layercache.quantization.quantize_layer (cache_layer does it for 'nf4'/'int8')")
    if req not in MODES and stored is not None:
        raise ValueError(f"the stored layer is quantized as {stored!r}, not {requested!r}")


# ---- modules -------------------------------------------------------------------------------------

if torch is not None:
    _Base = torch.nn.Module
else:  # pragma: no cover
    _Base = object

_NF4_PARTS = {"weight": "weight", "weight.absmax": "weight_absmax", "weight.quant_map": "weight_quant_map",
              "weight.nested_absmax": "weight_nested_absmax",
              "weight.nested_quant_map": "weight_nested_quant_map", "weight" + _STATE: "weight_quant_state"}
_INT8_PARTS = {"weight": "weight", "SCB": "SCB", "weight_format": "weight_format"}
_TORCH_FROM_NAME = {}
if torch is not None:
    _TORCH_FROM_NAME = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


class _QuantizedLinear(_Base):
    """A linear projection whose weight is stored quantized and dequantized (C++, GIL released) in
    every forward. ``kind`` "linear": ``x @ W.T + b`` (nn.Linear); "conv1d_t": GPT-2's Conv1D, whose
    ``[in, out]`` weight was transposed to ``[out, in]`` before quantizing, as transformers does before
    handing it to bitsandbytes (so ``x @ W.T + b`` too); "conv1d": ``x @ W + b`` with the weight
    quantized as stored (entries written before the transposition; read only)."""

    _PARTS = {}
    mode = None

    def __init__(self, weight_shape, weight_dtype_name, bias=None, kind="linear"):
        super().__init__()
        self.weight_shape = tuple(int(x) for x in weight_shape)
        self.weight_dtype_name = weight_dtype_name
        self.kind = kind
        if kind in ("linear", "conv1d_t"):
            self.out_features, self.in_features = self.weight_shape
        else:
            self.in_features, self.out_features = self.weight_shape
        self.bias = bias
        for attr in self._PARTS.values():
            self.register_buffer(attr, None)

    @property
    def weight_dtype(self):
        return _TORCH_FROM_NAME[self.weight_dtype_name]

    def _parts(self):
        return {k: getattr(self, a) for k, a in self._PARTS.items() if getattr(self, a) is not None}

    def set_parts(self, parts):
        """Sets the stored tensors (by their state_dict suffixes); no copy."""
        for k, v in parts.items():
            if k not in self._PARTS:
                raise ValueError(f"{type(self).__name__} has no tensor {k!r}")
            setattr(self, self._PARTS[k], v)

    def _info(self):
        raise NotImplementedError

    def dequantized_weight(self, dtype=None):
        """The weight as a plain tensor (a new one each call), in its original dtype or `dtype`."""
        return self._dequantize(dtype)

    def _dequantize(self, dtype):
        return dequantize_tensor("weight", self._parts(), self._info(), dtype or self.weight_dtype)

    def forward(self, x):
        w = self._dequantize(self.weight_dtype)
        if w.dtype != x.dtype:
            w = w.to(x.dtype)
        if w.device != x.device:
            w = w.to(x.device)
        if self.kind in ("linear", "conv1d_t"):
            return torch.nn.functional.linear(x, w, self.bias)
        shape = x.shape[:-1] + (self.out_features,)
        flat = x.reshape(-1, x.shape[-1])
        y = flat @ w if self.bias is None else torch.addmm(self.bias.to(x.dtype), flat, w)
        return y.view(shape)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for k, v in self._parts().items():
            destination[prefix + k] = v if keep_vars else v.detach()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for k in self._PARTS:
            if prefix + k in state_dict:
                setattr(self, self._PARTS[k], state_dict[prefix + k])
        if self.bias is not None and prefix + "bias" in state_dict:
            self.bias = torch.nn.Parameter(state_dict[prefix + "bias"], requires_grad=False)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, mode={self.mode}, kind={self.kind}")


class Linear4bit(_QuantizedLinear):
    """A linear layer with an NF4 weight in bitsandbytes' layout (state_dict names as
    bitsandbytes.nn.Linear4bit: weight, weight.absmax, weight.quant_map, [weight.nested_absmax,
    weight.nested_quant_map,] weight.quant_state.bitsandbytes__nf4, bias)."""

    _PARTS = _NF4_PARTS
    mode = "nf4"

    def __init__(self, weight_shape, weight_dtype_name, blocksize=64, nested=False, bias=None, kind="linear"):
        super().__init__(weight_shape, weight_dtype_name, bias, kind)
        self.blocksize = int(blocksize)
        self.nested = bool(nested)

    def _info(self):
        return {"mode": "nf4", "blocksize": self.blocksize, "nested": self.nested,
                "tensors": {"weight": {"dtype": self.weight_dtype_name, "shape": list(self.weight_shape)}}}


class LinearInt8(_QuantizedLinear):
    """A linear layer with an LLM.int8() weight (state_dict names as bitsandbytes.nn.Linear8bitLt:
    weight (int8), SCB, weight_format, bias)."""

    _PARTS = _INT8_PARTS
    mode = "int8"

    def _info(self):
        return {"mode": "int8", "tensors": {"weight": {"dtype": self.weight_dtype_name,
                                                       "shape": list(self.weight_shape)}}}


def _kind_of(module):
    if torch is None:
        return None
    if isinstance(module, torch.nn.Linear):
        return "linear"
    name = type(module).__name__
    w = module._parameters.get("weight")
    if w is None or w.dim() != 2:
        return None
    if name == "Linear":
        return "linear"
    if name == "Conv1D":
        return "conv1d"
    return None


def _set_child(root, path, new):
    *parents, leaf = path.split(".")
    owner = root
    for p in parents:
        owner = getattr(owner, p)
    setattr(owner, leaf, new)


def _selected(module, config):
    """[(module path, child, kind)] of the projections `config` quantizes."""
    out = []
    for path, child in module.named_modules():
        kind = _kind_of(child)
        if kind is None:
            continue
        w = child._parameters["weight"]
        dt = _TORCH_NAMES.get(w.dtype)
        full = (path + "." if path else "") + "weight"
        if dt and _q.should_quantize(full, dt, list(w.shape), config.min_elements, config.quantize_embeddings):
            out.append((path, child, kind))
    return out


def _share_cache_refs(module, memo):
    """Deep copies share (not copy) what the cache attached to a module it returned."""
    for m in module.modules():
        for k, v in vars(m).items():
            if k.startswith("_layercache"):
                memo[id(v)] = v
    return memo


def _empty_quantized(kind, rec, info, bias):
    if kind == "conv1d" and rec.get("transposed"):
        kind = "conv1d_t"
    if info["mode"] == "nf4":
        return Linear4bit(rec["shape"], rec["dtype"], info["blocksize"], info.get("nested", False), bias, kind)
    return LinearInt8(rec["shape"], rec["dtype"], bias, kind)


def quantize_layer(layer, config=None):
    """A quantized copy of `layer` (the input is not changed).

    - ``nn.Module``: a copy whose selected projections are ``Linear4bit`` / ``LinearInt8`` holding
      the packed weights (callable; dequantized in forward); other parameters are copied.
    - dict of tensors / arrays: a ``QuantizedTensors`` dict with transformers' tensor names.

    Raises ValueError for an already quantized layer, NaN/Inf in a weight (naming it), or a bad
    configuration. ``config`` None: get_nf4_config()."""
    config = config or get_nf4_config()
    if isinstance(config, str):
        config = config_for_mode(config)
    if quantization_info(layer) is not None:
        raise ValueError("the layer is already quantized; dequantize it first to change its mode")
    if torch is not None and isinstance(layer, torch.nn.Module):
        sel = _selected(layer, config)
        skip = {id(child._parameters["weight"]) for _, child, _ in sel}
        memo = {}
        for p in layer.parameters():
            if id(p) in skip:
                memo[id(p)] = torch.nn.Parameter(torch.empty(0, dtype=p.dtype, device="meta"), requires_grad=False)
        q = copy.deepcopy(layer, _share_cache_refs(layer, memo))  # the selected weights are not copied
        records = {}
        for path, child, kind in sel:
            full = (path + "." if path else "") + "weight"
            w = child._parameters["weight"]
            if kind == "conv1d":
                # GPT-2's Conv1D keeps its weight as [in, out]; transformers transposes it to
                # [out, in] before bitsandbytes quantizes it: the same bytes, blocks and rows here.
                w = w.detach().t().contiguous()
            parts = quantize_tensor("weight", w, config)
            rec = {"dtype": _TORCH_NAMES[w.dtype], "shape": list(w.shape)}
            if kind == "conv1d":
                rec["transposed"] = True
            records[full] = rec
            new_bias = q.get_submodule(path).bias if path else q.bias
            if new_bias is not None and not isinstance(new_bias, torch.nn.Parameter):
                new_bias = torch.nn.Parameter(new_bias, requires_grad=False)
            info = {"mode": config.mode, "blocksize": config.blocksize, "nested": config.double_quant}
            mod = _empty_quantized(kind, rec, info, new_bias)
            mod.set_parts(parts)
            if not path:
                mod._layercache_quantization = _info_json(config.mode, config.blocksize, config.double_quant,
                                                          records)
                return mod
            _set_child(q, path, mod)
        q._layercache_quantization = _info_json(config.mode, config.blocksize, config.double_quant, records)
        return q
    items = dict(layer.items()) if hasattr(layer, "items") else None
    if items is None:
        raise ValueError("layer must be a torch.nn.Module or a dict of tensors/arrays, got "
                         f"{type(layer).__name__}")
    out, records = {}, {}
    for name, t in items.items():
        dt = _dtype_name(t)
        if dt and _q.should_quantize(name, dt, list(t.shape), config.min_elements, config.quantize_embeddings):
            out.update(quantize_tensor(name, t, config))
            records[name] = {"dtype": dt, "shape": list(t.shape)}
        else:
            out[name] = t
    metadata = dict(getattr(layer, "metadata", None) or {})
    metadata[QUANT_KEY] = _info_json(config.mode, config.blocksize, config.double_quant, records)
    return QuantizedTensors(out, metadata)


def _aux_names(info):
    names = set()
    for name in info["tensors"]:
        if info["mode"] == "nf4":
            names.update(name + s for s in (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", _STATE))
        else:
            p = _module_prefix(name)
            names.update((p + "SCB", p + "weight_format"))
    return names


def dequantize_tensors(tensors, info, dtype=None):
    """A dict of plain tensors: the quantized weights dequantized (to their original dtype, or
    `dtype`) under their names; the quantization's extra tensors dropped."""
    aux = _aux_names(info)
    out = {}
    for name, t in tensors.items():
        if name in aux:
            continue
        if name not in info["tensors"]:
            out[name] = t
            continue
        w = dequantize_tensor(name, tensors, info, dtype)
        if info["tensors"][name].get("transposed"):  # back to GPT-2's Conv1D layout [in, out]
            w = w.t().contiguous() if torch is not None and isinstance(w, torch.Tensor) else np.ascontiguousarray(w.T)
        out[name] = w
    return out


class _Conv1D(_Base):
    """GPT-2's ``x @ W + b`` with a plain weight (what dequantize() makes of a conv1d projection)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = bias

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        flat = x.reshape(-1, x.shape[-1])
        y = flat @ self.weight if self.bias is None else torch.addmm(self.bias, flat, self.weight)
        return y.view(shape)


def _plain_module(qmod, dtype=None):
    w = qmod._dequantize(dtype or qmod.weight_dtype)
    if qmod.kind == "linear":
        lin = torch.nn.Linear(qmod.in_features, qmod.out_features, bias=qmod.bias is not None,
                              dtype=w.dtype, device="meta")
        lin.weight = torch.nn.Parameter(w, requires_grad=False)
        if qmod.bias is not None:
            lin.bias = qmod.bias
        return lin
    if qmod.kind == "conv1d_t":
        w = w.t().contiguous()
    return _Conv1D(w, qmod.bias)


def dequantize(layer, dtype=None):
    """The plain (dequantized) form of a quantized layer: a module with ordinary linear layers, or a
    dict of tensors. A layer that is not quantized is returned as it is."""
    info = quantization_info(layer)
    if info is None:
        return layer
    if torch is not None and isinstance(layer, torch.nn.Module):
        if isinstance(layer, _QuantizedLinear):
            return _plain_module(layer, dtype)
        out = copy.deepcopy(layer, _share_cache_refs(layer, {}))
        for path, child in list(out.named_modules()):
            if isinstance(child, _QuantizedLinear) and path:
                _set_child(out, path, _plain_module(child, dtype))
        if hasattr(out, "_layercache_quantization"):
            del out._layercache_quantization
        return out
    metadata = {k: v for k, v in (getattr(layer, "metadata", None) or {}).items() if k != QUANT_KEY}
    plain = dequantize_tensors(layer, info, dtype)
    return QuantizedTensors(plain, metadata)


dequantize_layer = dequantize


def quantized_structure(module, info):
    """Replaces, in an (empty) plain module, the projections `info` lists by empty quantized ones, so
    that a cached quantized layer can be loaded into it. Returns the module."""
    for name, rec in info["tensors"].items():
        path = name[: -len(".weight")] if name.endswith(".weight") else ""
        child = module.get_submodule(path) if path else module
        kind = _kind_of(child)
        if kind is None:
            raise ValueError(f"{name!r} is quantized but {type(child).__name__} is not a linear projection")
        bias = child._parameters.get("bias")
        mod = _empty_quantized(kind, rec, info, bias)
        if not path:
            return mod
        _set_child(module, path, mod)
    return module


def load_quantized(module, tensors):
    """Points a module made by quantized_structure() at the cached tensors (no copy); returns the
    tensors it holds. Raises ValueError when a tensor is missing."""
    held = []
    names = set(tensors)
    for path, child in list(module.named_modules()):
        p = path + "." if path else ""
        if isinstance(child, _QuantizedLinear):
            parts = {}
            for suffix in child._PARTS:
                if p + suffix in tensors:
                    parts[suffix] = tensors[p + suffix]
            if "weight" not in parts:
                raise ValueError(f"the cached layer lacks {p + 'weight'!r}")
            child.set_parts(parts)
            held.extend(parts.values())
            if child.bias is not None:
                if p + "bias" not in names:
                    raise ValueError(f"the cached layer lacks {p + 'bias'!r}")
                child.bias = torch.nn.Parameter(tensors[p + "bias"], requires_grad=False)
                held.append(child.bias)
            continue
        for leaf in list(child._parameters) + list(child._buffers):
            if getattr(child, leaf, None) is None:
                continue
            key = p + leaf
            if key not in names:
                raise ValueError(f"the cached layer lacks {key!r} needed by {type(module).__name__}")
            value = tensors[key]
            if leaf in child._parameters:
                child._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
            else:
                child._buffers[leaf] = value
            held.append(value)
    module._layercache_tensors = tensors
    module._layercache_quantization = metadata_of(tensors).get(QUANT_KEY)
    return held


# ---- the cache's hooks (layercache.LayerCache calls these) -------------------------------------------

def prepare_for_cache(layer, quantization_mode):
    """(layer to store, metadata to add) for cache_layer(..., quantization_mode): a layer that is not
    quantized is quantized with the mode's defaults when the mode is "nf4"/"int8"; a quantized layer
    must be stored under its own mode. Other modes are labels for plain layers."""
    req = (quantization_mode or "").lower()
    info = quantization_info(layer)
    if req in MODES:
        if info is None:
            layer = quantize_layer(layer, config_for_mode(req))
        elif info["mode"] != req:
            raise ValueError(f"the layer is quantized as {info['mode']!r}, not {quantization_mode!r}")
    elif info is not None:
        raise ValueError(f"the layer is quantized as {info['mode']!r}: cache it with "
                         f"quantization_mode={info['mode']!r}")
    return layer, metadata_of(layer)


def _has_quantized(module):
    return any(isinstance(m, _QuantizedLinear) for m in module.modules())


def _plain_structure(module):
    """A module whose quantized projections are replaced by empty plain ones (for dequantize=True)."""
    for path, child in list(module.named_modules()):
        if isinstance(child, _QuantizedLinear):
            shape = child.weight_shape[::-1] if child.kind == "conv1d_t" else child.weight_shape
            w = torch.empty(shape, dtype=child.weight_dtype, device="meta")
            plain = _Conv1D(w, child.bias) if child.kind != "linear" else torch.nn.Linear(
                child.in_features, child.out_features, bias=child.bias is not None, dtype=w.dtype, device="meta")
            if not path:
                return plain
            _set_child(module, path, plain)
    return module


def build_for_cache(cache, tensors, key, module, dequantize, load_into):
    """What get_layer returns for a stored layer (called by LayerCache._build): None when the layer is
    not quantized and `dequantize` was not asked (the cache's usual path), else (object, held tensors).
    Raises ValueError when the requested mode does not match the stored layer."""
    check_mode(tensors.metadata, key[2])
    info = quantization_info(tensors.metadata)
    if info is None:
        return None
    held = [tensors.base] if torch is not None and getattr(tensors, "base", None) is not None else []
    if dequantize:
        plain = dequantize_tensors(tensors, info)
        metadata = {k: v for k, v in tensors.metadata.items() if k != QUANT_KEY}
        plain_tensors = QuantizedTensors(plain, metadata)
    if torch is None:
        return (plain_tensors if dequantize else tensors), held
    strict = module is not None
    if module is None:
        module, strict = cache._module_for(tensors, key)
        if module is None:  # a known family from the model's config.json, built plain
            module, strict = cache._module_for(tensors, (key[0], key[1], "", key[3]))
    if module is None:
        return (plain_tensors if dequantize else tensors), held
    try:
        if dequantize:
            module = _plain_structure(module) if _has_quantized(module) else module
            load_into(module, plain_tensors)
            module._layercache_plain = plain_tensors  # keeps the dequantized weights with the module
            return module, []
        if not _has_quantized(module):
            module = quantized_structure(module, info)
        load_quantized(module, tensors)
        return module, held
    except ValueError:
        if strict:
            raise
        return (plain_tensors if dequantize else tensors), held
