"""The seed's module path: ``from nexus_final.sli.layer_cache import LayerCache``."""
from layercache import LayerCache, LayerTensors, get_layer_cache, reset_layer_cache  # noqa: F401

__all__ = ["LayerCache", "LayerTensors", "get_layer_cache", "reset_layer_cache"]
