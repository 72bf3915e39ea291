"""layercache's own pure-torch decoder layers for the common Hugging Face families.

The cache builds these from a model's ``config.json`` (kept by the cache, see docs/PYTHON.md) on the
meta device and points their parameters at the cached tensors without a copy, so that
``cache.get_layer(model_id, i)`` is callable in any process::

    hidden = layer(hidden)        # [batch, seq, hidden] -> [batch, seq, hidden]
    hidden = layer(hidden, attention_mask=padding_mask, position_ids=positions)

By default positions are 0..seq-1 and attention is causal; ``attention_mask`` (a [batch, seq] padding
mask, or the complete 4-D mask a transformers model passes its layers) and ``position_ids`` are taken
as transformers' decoder layers take them. The equations are those of the transformers
implementation of each family (eager attention):

- Llama, Mistral, Qwen2: RMSNorm (``rms_norm_eps``; computed in float32, scaled in the input dtype),
  grouped-query attention (``num_key_value_heads``), rotary embeddings with ``rope_theta`` (the
  rotate-half convention; ``rope_scaling`` of type ``linear`` and ``llama3`` supported), SwiGLU MLP
  (``hidden_act``, silu by default). Qwen2 has q/k/v biases; Llama has them when
  ``attention_bias`` is set; Mistral applies ``sliding_window``.
- GPT-2: LayerNorm (``layer_norm_epsilon``), Conv1D projections (``x @ W + b``), ``gelu_new``.

A layer holds only its own parameters; nothing here reads or runs code from the cache.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "GPT2Block", "RMSNorm",
           "family_of", "layer_class_for", "layer_from_config"]


def _act(name):
    name = (name or "silu").lower()
    if name in ("silu", "swish"):
        return F.silu
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"activation {name!r} is not supported by layercache's decoder layers")


def _empty(*shape, dtype):
    return torch.nn.Parameter(torch.empty(*shape, dtype=dtype, device="meta"), requires_grad=False)


def _dtype(config):
    name = config.get("torch_dtype") or "float32"
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        str(name).replace("torch.", ""), torch.float32)


class Linear(torch.nn.Module):
    """``x @ weight.T (+ bias)``, parameters on the meta device until the cache fills them."""

    def __init__(self, in_features, out_features, bias, dtype):
        super().__init__()
        self.weight = _empty(out_features, in_features, dtype=dtype)
        self.bias = _empty(out_features, dtype=dtype) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Conv1D(torch.nn.Module):
    """GPT-2's transposed linear: ``x @ weight + bias`` with weight [in, out]."""

    def __init__(self, in_features, out_features, dtype):
        super().__init__()
        self.weight = _empty(in_features, out_features, dtype=dtype)
        self.bias = _empty(out_features, dtype=dtype)

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class RMSNorm(torch.nn.Module):
    """transformers' LlamaRMSNorm: normalised in float32, scaled in the input dtype."""

    def __init__(self, hidden_size, eps, dtype):
        super().__init__()
        self.weight = _empty(hidden_size, dtype=dtype)
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class LayerNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps, dtype):
        super().__init__()
        self.weight = _empty(hidden_size, dtype=dtype)
        self.bias = _empty(hidden_size, dtype=dtype)
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def _inv_freq(config, head_dim):
    base = float(config.get("rope_theta", 10000.0))
    dim = int(head_dim * float(config.get("partial_rotary_factor", 1.0)))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old = float(scaling.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported by layercache's decoder layers")


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _causal_mask(seq, dtype, device, sliding_window=None, offset=0):
    i = torch.arange(seq, device=device).view(-1, 1) + offset
    j = torch.arange(seq + offset, device=device).view(1, -1)
    allowed = j <= i
    if sliding_window:
        allowed = allowed & (i - j < int(sliding_window))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def _allowed(attention_mask, b, s, device, sliding_window=None):
    """Which keys each query may attend to, [b or 1, 1, s, s] bool: causal (within ``sliding_window``),
    and, with a padding mask (``attention_mask`` [batch, seq], 1 or True for tokens, 0 or False for
    padding, as given to a transformers model), not the padding."""
    i = torch.arange(s, device=device).view(-1, 1)
    j = torch.arange(s, device=device).view(1, -1)
    allowed = j <= i
    if sliding_window:
        allowed = allowed & (i - j < int(sliding_window))
    allowed = allowed[None, None]
    if attention_mask is not None:
        pad = torch.as_tensor(attention_mask, device=device)
        if pad.dim() != 2 or pad.shape[-1] != s or pad.shape[0] not in (1, b):
            raise ValueError(f"attention_mask of shape {tuple(pad.shape)}: pass a padding mask [batch, seq] = "
                             f"[{b}, {s}] (1 for tokens, 0 for padding) or a 4-D mask [batch, 1, seq, seq]")
        allowed = allowed & (pad != 0)[:, None, None, :]
    return allowed


def _full_mask(attention_mask, b, s, dtype, device):
    """A complete 4-D mask as transformers' models pass to their decoder layers ([batch or 1, 1 or heads,
    seq, >= seq]; additive, or bool with True where attention is allowed), as an additive mask; None
    for anything else."""
    if attention_mask is None or not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        return None
    m = attention_mask
    if m.shape[-2] != s or m.shape[-1] < s or m.shape[0] not in (1, b):
        if m.shape[-2] == 1:
            return None  # a [batch, 1, 1, seq] padding mask: see _broadcast_padding
        raise ValueError(f"attention_mask of shape {tuple(m.shape)} does not fit {s} positions")
    m = m[..., :s].to(device=device)
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m, torch.finfo(dtype).min)
    return m.to(dtype)


def _broadcast_padding(attention_mask, b, s, dtype, device):
    """A [batch, 1, 1, seq] mask (additive or bool), as GPT-2 models of transformers 4.x pass to their
    blocks, as an additive [batch, 1, 1, seq] mask; None for anything else."""
    m = attention_mask
    if not isinstance(m, torch.Tensor) or m.dim() != 4 or m.shape[-2] != 1 or m.shape[-1] != s:
        return None
    m = m.to(device=device)
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m, torch.finfo(dtype).min)
    return m.to(dtype)


def _no_cache(**given):
    for name, value in given.items():
        if value is not None:
            raise ValueError(f"{name} is not supported: layercache's decoder layers keep no key/value cache "
                             "and take no cross-attention or head mask; run the whole sequence")


class LlamaDecoderLayer(torch.nn.Module):
    """One Llama decoder layer (transformers' LlamaDecoderLayer, eager attention).

    ``config`` is the model's config.json as a dict (only JSON values)."""

    family = "llama"
    qkv_bias_default = False

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        c = self.config
        h = int(c["hidden_size"])
        self.num_heads = int(c["num_attention_heads"])
        self.num_kv_heads = int(c.get("num_key_value_heads") or self.num_heads)
        self.head_dim = int(c.get("head_dim") or h // self.num_heads)
        inter = int(c["intermediate_size"])
        eps = float(c.get("rms_norm_eps", 1e-6))
        dtype = _dtype(c)
        qkv_bias = bool(c.get("attention_bias", self.qkv_bias_default))
        o_bias = bool(c.get("attention_bias", False)) and self.family == "llama"
        mlp_bias = bool(c.get("mlp_bias", False))
        self.sliding_window = c.get("sliding_window") if self.family == "mistral" or (
            self.family == "qwen2" and c.get("use_sliding_window")) else None
        self.act = _act(c.get("hidden_act"))
        self.input_layernorm = RMSNorm(h, eps, dtype)
        self.post_attention_layernorm = RMSNorm(h, eps, dtype)
        self.self_attn = torch.nn.Module()
        self.self_attn.q_proj = Linear(h, self.num_heads * self.head_dim, qkv_bias, dtype)
        self.self_attn.k_proj = Linear(h, self.num_kv_heads * self.head_dim, qkv_bias, dtype)
        self.self_attn.v_proj = Linear(h, self.num_kv_heads * self.head_dim, qkv_bias, dtype)
        self.self_attn.o_proj = Linear(self.num_heads * self.head_dim, h, o_bias, dtype)
        self.mlp = torch.nn.Module()
        self.mlp.gate_proj = Linear(h, inter, mlp_bias, dtype)
        self.mlp.up_proj = Linear(h, inter, mlp_bias, dtype)
        self.mlp.down_proj = Linear(inter, h, mlp_bias, dtype)
        self._inv_freq = _inv_freq(c, self.head_dim)
        self._rope_cache = {}

    def __layercache_spec__(self):
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "kwargs": {"config": self.config}}

    def _rope(self, seq, dtype, device):
        key = (seq, dtype, device)
        cached = self._rope_cache.get(key)
        if cached is None:
            pos = torch.arange(seq, dtype=torch.float32)
            freqs = pos[:, None] * self._inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cached = (emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device))
            if len(self._rope_cache) > 8:
                self._rope_cache.clear()
            self._rope_cache[key] = cached
        return cached

    def _rope_at(self, positions, dtype, device):
        """cos and sin [batch, 1, seq, head_dim] at `positions` ([batch, seq] or [seq])."""
        pos = torch.as_tensor(positions, device=device)
        if pos.dim() == 1:
            pos = pos[None]
        freqs = pos[..., None].float() * self._inv_freq.to(device)[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    def attention(self, x, attention_mask=None, position_ids=None, position_embeddings=None):
        b, s, _ = x.shape
        a = self.self_attn
        q = a.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = a.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:  # (cos, sin) [batch, seq, head_dim], as transformers passes them
            cos, sin = (t.to(device=q.device, dtype=q.dtype).unsqueeze(1) for t in position_embeddings)
        elif position_ids is not None:
            cos, sin = self._rope_at(position_ids, q.dtype, q.device)
        else:
            cos, sin = self._rope(s, q.dtype, q.device)
        rot = cos.shape[-1]
        if rot == self.head_dim:
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        else:  # partial rotary
            q = torch.cat((q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]), dim=-1)
            k = torch.cat((k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]), dim=-1)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * (self.head_dim ** -0.5)
        full = _full_mask(attention_mask, b, s, scores.dtype, scores.device)
        if full is not None:
            scores = scores + full  # transformers' complete mask, as its layers take it
        elif attention_mask is None:
            scores = scores + _causal_mask(s, scores.dtype, scores.device, self.sliding_window)
        else:
            allowed = _allowed(attention_mask, b, s, scores.device, self.sliding_window)
            bias = torch.zeros(allowed.shape, dtype=scores.dtype, device=scores.device)
            scores = scores + bias.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        return a.o_proj(out)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None, use_cache=False,
                cache_position=None, position_embeddings=None, **kwargs):
        """``hidden_states`` [batch, seq, hidden] -> the new hidden states (a tensor).

        As transformers' decoder layer takes them: ``attention_mask`` a padding mask [batch, seq] (1 for
        tokens, 0 for padding; combined with the causal mask and the sliding window here) or the complete
        4-D mask [batch, 1, seq, seq] (additive, or bool True where allowed) a transformers model builds;
        ``position_ids`` [batch, seq] the positions for the rotary embedding (default 0..seq-1;
        ``cache_position`` stands in when they are not given); ``position_embeddings`` (cos, sin) as
        transformers' rotary embedding returns them. There is no key/value cache: a
        ``past_key_value(s)`` raises ValueError."""
        _no_cache(past_key_value=past_key_value, past_key_values=kwargs.get("past_key_values"),
                  layer_past=kwargs.get("layer_past"))
        if position_ids is None and position_embeddings is None and cache_position is not None:
            position_ids = cache_position
        x = hidden_states
        x = x + self.attention(self.input_layernorm(x), attention_mask, position_ids, position_embeddings)
        h = self.post_attention_layernorm(x)
        m = self.mlp
        return x + m.down_proj(self.act(m.gate_proj(h)) * m.up_proj(h))


class MistralDecoderLayer(LlamaDecoderLayer):
    """Mistral: Llama's layer with a sliding attention window (``sliding_window``)."""

    family = "mistral"


class Qwen2DecoderLayer(LlamaDecoderLayer):
    """Qwen2: Llama's layer with q/k/v biases."""

    family = "qwen2"
    qkv_bias_default = True

    def __init__(self, config):
        config = dict(config)
        config.pop("attention_bias", None)  # Qwen2 always has q/k/v biases and no o bias
        super().__init__(config)


class GPT2Block(torch.nn.Module):
    """One GPT-2 block (transformers' GPT2Block, eager attention, no cache)."""

    family = "gpt2"

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        c = self.config
        h = int(c.get("n_embd") or c["hidden_size"])
        self.num_heads = int(c.get("n_head") or c["num_attention_heads"])
        self.head_dim = h // self.num_heads
        inner = int(c.get("n_inner") or 4 * h)
        eps = float(c.get("layer_norm_epsilon", 1e-5))
        dtype = _dtype(c)
        self.scale = bool(c.get("scale_attn_weights", True))
        self.act = _act(c.get("activation_function", "gelu_new"))
        self.ln_1 = LayerNorm(h, eps, dtype)
        self.ln_2 = LayerNorm(h, eps, dtype)
        self.attn = torch.nn.Module()
        self.attn.c_attn = Conv1D(h, 3 * h, dtype)
        self.attn.c_proj = Conv1D(h, h, dtype)
        self.mlp = torch.nn.Module()
        self.mlp.c_fc = Conv1D(h, inner, dtype)
        self.mlp.c_proj = Conv1D(inner, h, dtype)

    def __layercache_spec__(self):
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "kwargs": {"config": self.config}}

    def forward(self, hidden_states, layer_past=None, attention_mask=None, head_mask=None,
                encoder_hidden_states=None, encoder_attention_mask=None, use_cache=False, output_attentions=False,
                **kwargs):
        """``hidden_states`` [batch, seq, hidden] -> the new hidden states (a tensor).

        ``attention_mask``, as transformers' GPT2Block takes it: a padding mask [batch, seq] (1 for tokens,
        0 for padding; combined with the causal mask here), the [batch, 1, 1, seq] additive padding mask of
        transformers 4.x (added after the causal mask, as its GPT-2 did), or the complete 4-D mask
        [batch, 1, seq, seq] (additive, or bool) of transformers 5. Positions enter GPT-2 at the
        embeddings, so ``position_ids`` is accepted and unused. There is no key/value cache."""
        _no_cache(layer_past=layer_past, past_key_values=kwargs.get("past_key_values"),
                  past_key_value=kwargs.get("past_key_value"), head_mask=head_mask,
                  encoder_hidden_states=encoder_hidden_states)
        x = hidden_states
        b, s, h = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(h, dim=2)
        q, k, v = (t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2))
        if self.scale:
            scores = scores / torch.full([], v.size(-1) ** 0.5, dtype=scores.dtype, device=scores.device)
        min_value = torch.full([], torch.finfo(scores.dtype).min, dtype=scores.dtype, device=scores.device)
        full = _full_mask(attention_mask, b, s, scores.dtype, scores.device)
        if full is not None:
            scores = scores + full
        else:
            padding = _broadcast_padding(attention_mask, b, s, scores.dtype, scores.device)
            allowed = _allowed(None if padding is not None else attention_mask, b, s, x.device)
            scores = torch.where(allowed, scores, min_value)
            if padding is not None:
                scores = scores + padding
        probs = F.softmax(scores, dim=-1).to(v.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        x = x + self.attn.c_proj(out)
        m = self.mlp
        return x + m.c_proj(self.act(m.c_fc(self.ln_2(x))))


_FAMILIES = {"llama": LlamaDecoderLayer, "mistral": MistralDecoderLayer, "qwen2": Qwen2DecoderLayer,
             "gpt2": GPT2Block}
_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
                  "GPT2LMHeadModel": "gpt2", "GPT2Model": "gpt2"}


def family_of(config):
    """"llama", "mistral", "qwen2", "gpt2", or None for a config of another family."""
    if not isinstance(config, dict):
        return None
    t = config.get("model_type")
    if t in _FAMILIES:
        return t
    for arch in config.get("architectures") or []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    return None


def layer_class_for(config):
    family = family_of(config)
    return _FAMILIES.get(family) if family else None


def layer_from_config(config):
    """An empty (meta) decoder layer for the model of ``config``, or None when the family is not one
    layercache knows."""
    cls = layer_class_for(config)
    return cls(config) if cls is not None else None
