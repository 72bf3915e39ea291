"""Selective layer inference: a whole Hugging Face-format causal LM executed layer by layer from the cache.

    from layercache import LayerCache
    from layercache.sli import StreamingModel
    cache = LayerCache(max_memory_cache_size_gb=0.5)        # smaller than the model: layers stream
    cache.import_checkpoint("path/to/checkpoint", "llama")  # or download_and_cache each layer
    model = StreamingModel(cache, "llama")
    tokens = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=16)

The model's config.json comes from the cache (fetched with the model by download_and_cache, read by
import_checkpoint) or is passed as ``config=``. The embeddings, final norm and lm_head are the
model's non-layer entry (``download_non_layer_tensors`` or ``import_checkpoint``). Each decoder layer
is asked for with ``get_layer_with_prefetch``: while layer i runs, the C++ prefetch threads load the
next ``lookahead`` layers from disk into the memory tier, so a model larger than the memory budget
runs with only about ``lookahead + 1`` layers in memory. ``resident=True`` keeps every layer (the
all-in-memory reference). Families: Llama, Mistral, Qwen2, GPT-2 (layercache.models).
"""

import torch
import torch.nn.functional as F

from . import models

__all__ = ["StreamingModel"]

NON_LAYER = "non-layer"  # the quantization_mode of a model's non-layer entry (C++ kNonLayerQuantizationMode)


def _find(tensors, *suffixes):
    for s in suffixes:
        for name, t in tensors.items():
            if name == s or name.endswith("." + s):
                return t
    return None


class StreamingModel:
    """A causal LM whose decoder layers stay in the cache until they run."""

    def __init__(self, cache, model_id, config=None, num_layers=None, revision=None, lookahead=2, resident=False,
                 quantization_mode=None):
        # quantization_mode: run the layers cached under that mode ("nf4", "int8": layercache.quantization).
        self.cache, self.model_id, self.revision = cache, model_id, revision
        self.quantization_mode = quantization_mode
        self.config = dict(config) if config is not None else cache.model_config(model_id, revision)
        if self.config is None:
            raise ValueError(f"the cache has no config.json for {model_id!r}: download the model with "
                             "download_and_cache, import it with import_checkpoint, or pass config=")
        self.family = models.family_of(self.config)
        if self.family is None:
            raise ValueError(f"{model_id!r} is a {self.config.get('model_type')!r} model; layercache runs "
                             "llama, mistral, qwen2 and gpt2")
        c = self.config
        self.num_layers = int(num_layers or c.get("num_hidden_layers") or c.get("n_layer"))
        self.lookahead = int(lookahead)
        head = cache.get_layer(model_id, 0, quantization_mode=NON_LAYER, revision=revision)
        if head is None:
            raise ValueError(f"the cache has no embeddings/final norm/lm_head for {model_id!r}: cache them "
                             "with download_non_layer_tensors or import_checkpoint")
        self._head = head
        if self.family == "gpt2":
            self.embed = _find(head, "wte.weight")
            self.pos_embed = _find(head, "wpe.weight")
            self.norm_w, self.norm_b = _find(head, "ln_f.weight"), _find(head, "ln_f.bias")
            self.eps = float(c.get("layer_norm_epsilon", 1e-5))
            self.lm_head = _find(head, "lm_head.weight")
        else:
            self.embed = _find(head, "embed_tokens.weight")
            self.pos_embed = None
            self.norm_w, self.norm_b = _find(head, "norm.weight"), None
            self.eps = float(c.get("rms_norm_eps", 1e-6))
            self.lm_head = _find(head, "lm_head.weight")
        if self.lm_head is None:  # tied embeddings
            self.lm_head = self.embed
        if self.embed is None or self.norm_w is None:
            raise ValueError(f"the non-layer entry of {model_id!r} lacks the embeddings or the final norm "
                             f"(it has {sorted(head)})")
        self._resident = None
        if resident:
            self._resident = [self._layer(i) for i in range(self.num_layers)]

    def _layer(self, i):
        layer = self.cache.get_layer_with_prefetch(self.model_id, i, self.num_layers, lookahead=self.lookahead,
                                                   revision=self.revision, quantization_mode=self.quantization_mode)
        if layer is None:
            raise KeyError(f"layer {i} of {self.model_id!r} is not cached")
        if not callable(layer):
            raise TypeError(f"layer {i} of {self.model_id!r} came back as tensors, not a module: the cache "
                            "cannot build it from the model's config.json")
        return layer

    @torch.no_grad()
    def forward(self, input_ids):
        """Logits [batch, seq, vocab] (float32) for input_ids [batch, seq]."""
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        h = F.embedding(input_ids, self.embed)
        if self.pos_embed is not None:
            h = h + self.pos_embed[: input_ids.shape[1]]
        for i in range(self.num_layers):
            layer = self._resident[i] if self._resident is not None else self._layer(i)
            h = layer(h)
            del layer
        if self.family == "gpt2":
            h = F.layer_norm(h, (h.shape[-1],), self.norm_w, self.norm_b, self.eps)
        else:
            dtype = h.dtype
            x = h.to(torch.float32)
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            h = self.norm_w * x.to(dtype)
        return F.linear(h, self.lm_head).float()

    __call__ = forward

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens):
        """Greedy decoding: input_ids [batch, seq] -> [batch, seq + max_new_tokens] (each step runs the
        whole sequence through every layer; no KV cache)."""
        ids = torch.as_tensor(input_ids)
        if ids.dim() == 1:
            ids = ids[None]
        for _ in range(int(max_new_tokens)):
            nxt = self.forward(ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
        return ids
