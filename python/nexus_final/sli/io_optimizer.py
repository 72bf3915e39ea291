"""The seed's ``from nexus_final.sli.io_optimizer import IOOptimizer``.

``IOOptimizer(cache).get_layer_with_prefetch(model_id, layer_idx, num_layers)`` returns layer
``layer_idx`` after starting to prefetch the next ``lookahead`` layers (wrapping after the last, as
forward passes do) on the cache's C++ prefetch threads, without holding the GIL: it is
``LayerCache.get_layer_with_prefetch`` (the C++ ``LayerCache::get_layer_with_prefetch``).
"""
from layercache import LayerCache, get_layer_cache

__all__ = ["IOOptimizer"]


class IOOptimizer:
    def __init__(self, cache=None, lookahead=2):
        if cache is None:
            cache = get_layer_cache()
        if not isinstance(cache, LayerCache):
            raise TypeError(f"IOOptimizer needs a layercache LayerCache, got {type(cache).__name__}")
        if int(lookahead) < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.cache = cache
        self.lookahead = int(lookahead)

    def get_layer_with_prefetch(self, model_id, layer_idx, num_layers, quantization_mode=None, revision=None):
        """Layer ``layer_idx`` of ``model_id`` (None when it is not cached), the next ``lookahead``
        layers being loaded meanwhile."""
        return self.cache.get_layer_with_prefetch(model_id, layer_idx, num_layers, lookahead=self.lookahead,
                                                  quantization_mode=quantization_mode, revision=revision)

    def prefetch(self, model_id, layer_indices, quantization_mode=None, revision=None):
        """Starts loading these layers into memory; one future per index."""
        return self.cache.prefetch(model_id, layer_indices, quantization_mode=quantization_mode, revision=revision)
