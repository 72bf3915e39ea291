"""How the cache turns a cached layer back into an ``nn.Module`` (docs/PYTHON.md).

A module is cached as its tensors plus a *module spec* in the entry's metadata: the class's import
path and its constructor's keyword arguments as JSON (``{"class": "pkg.mod.Class", "kwargs": {...}}``).
The spec comes from ``cache_layer(..., module_spec=...)``, else from the module's
``__layercache_spec__()`` method, else, for a few torch.nn built-ins, from the module itself.

A spec is only data. The class it names is imported and instantiated only when it is allow-listed
*before* anything is imported: torch.nn's built-in modules and layercache's own are allowed by
default; :func:`allow_module_class` adds a class (or a package prefix ending in "."),
:func:`disallow_module_class` removes one. Cache contents never run code any other way (no pickle).
"""

import importlib
import json
import threading
import weakref

import torch

__all__ = ["allow_module_class", "disallow_module_class", "allowed_module_classes", "spec_of",
           "module_from_spec", "SPEC_KEY"]

SPEC_KEY = "python.module"  # entry metadata key holding the JSON spec

_lock = threading.Lock()
# Exact class paths, or prefixes ending in "." (a package and everything below it).
_allowed = {"torch.nn.modules.", "layercache."}
# Caches whose remembered objects were built under the old allow-list.
_caches = weakref.WeakSet()


def _changed():
    for cache in list(_caches):
        cache._forget()


def allow_module_class(path_or_class):
    """Lets get_layer rebuild modules of this class (an import path such as "mypkg.blocks.Block", the
    class itself, or a package prefix ending in ".")."""
    path = _path(path_or_class)
    with _lock:
        _allowed.add(path)
    _changed()


def disallow_module_class(path_or_class):
    """Removes a class or prefix from the allow-list (also a default one)."""
    path = _path(path_or_class)
    with _lock:
        _allowed.discard(path)
    _changed()


def allowed_module_classes():
    with _lock:
        return sorted(_allowed)


def _path(path_or_class):
    if isinstance(path_or_class, type):
        return f"{path_or_class.__module__}.{path_or_class.__qualname__}"
    if not isinstance(path_or_class, str) or not path_or_class:
        raise ValueError("pass a class or its import path")
    return path_or_class


def _is_allowed(path):
    with _lock:
        if path in _allowed:
            return True
        return any(p.endswith(".") and path.startswith(p) for p in _allowed)


def _builtin_spec(module):
    """Specs of torch.nn built-ins whose constructor arguments their parameters tell."""
    nn = torch.nn
    path = f"{type(module).__module__}.{type(module).__qualname__}"
    if type(module) is nn.Linear:
        kw = {"in_features": module.in_features, "out_features": module.out_features,
              "bias": module.bias is not None}
    elif type(module) is nn.Embedding:
        kw = {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim,
              "padding_idx": module.padding_idx}
    elif type(module) is nn.LayerNorm:
        kw = {"normalized_shape": list(module.normalized_shape), "eps": module.eps,
              "elementwise_affine": module.elementwise_affine}
    else:
        return None
    w = next(iter(module.parameters()), None)
    if w is not None:
        kw["dtype"] = str(w.dtype).replace("torch.", "")
    return {"class": path, "kwargs": kw}


def spec_of(module, module_spec=None):
    """The JSON text of `module`'s spec, or None when it has none."""
    spec = module_spec
    if spec is None and hasattr(module, "__layercache_spec__"):
        spec = module.__layercache_spec__()
    if spec is None:
        spec = _builtin_spec(module)
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise ValueError('module_spec must be {"class": "package.module.Class", "kwargs": {...}}')
    spec = {"class": spec["class"], "kwargs": dict(spec.get("kwargs") or {})}
    try:
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"the module spec's constructor arguments must be JSON values: {e}") from None


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


def module_from_spec(text):
    """An empty module built from the spec `text`, or None when its class is not allow-listed (or the
    spec is not one). Parameters are on the meta device where the class lets us."""
    try:
        spec = json.loads(text)
        path = spec["class"]
        kwargs = dict(spec.get("kwargs") or {})
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(path, str) or "." not in path:
        return None
    alias = getattr(torch.nn, path[len("torch.nn."):], None) if path.count(".") == 2 and path.startswith(
        "torch.nn.") else None
    if isinstance(alias, type):  # "torch.nn.Linear" -> "torch.nn.modules.linear.Linear"
        path = f"{alias.__module__}.{alias.__qualname__}"
    if not _is_allowed(path):
        return None
    mod_name, _, cls_name = path.rpartition(".")
    # The class may be nested (qualname); walk from the module.
    obj = None
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        break
    if not isinstance(obj, type) or not issubclass(obj, torch.nn.Module):
        return None
    if path.startswith("torch.nn."):
        if "dtype" in kwargs and isinstance(kwargs["dtype"], str):
            kwargs["dtype"] = _DTYPES.get(kwargs["dtype"], torch.float32)
        kwargs.setdefault("device", "meta")
    return obj(**kwargs)
