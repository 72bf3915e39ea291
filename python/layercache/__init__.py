"""layercache: a two-tier (memory + SSD) cache of model layers, with the API of
Nexus SLI's LayerCache.

    from layercache import LayerCache
    cache = LayerCache(cache_dir="~/.cache/nexus/layers", max_cache_size_gb=50.0)
    layer = cache.get_layer("qwen-7b", 5)          # None on a miss
    if layer is None:
        layer = build_layer_5()                     # an nn.Module, or a dict of tensors/arrays
        cache.cache_layer("qwen-7b", 5, layer)

A layer comes back as an ``nn.Module`` when this process knows its skeleton
(a module was cached, ``module=`` was passed, or a factory was registered with
``register_module_factory``), else as a ``LayerTensors`` mapping of name to
``torch.Tensor`` (numpy arrays without torch). Either way the tensors view the
cache's memory without a copy: treat them as read-only (clone before changing).
"""

import copy
import json
import os
import sys
import threading
import warnings

from . import _core

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dependency of the module
    np = None

try:
    import torch
except ImportError:
    torch = None

__all__ = ["LayerCache", "LayerTensors", "get_layer_cache", "reset_layer_cache"]

_NUMPY_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "F16": "float16",
    "U32": "uint32", "I32": "int32", "F32": "float32", "U64": "uint64", "I64": "int64", "F64": "float64",
    "C64": "complex64",
}
# Stored as raw bytes of this numpy type when numpy has no such dtype.
_RAW = {"BF16": "uint16", "F8_E5M2": "uint8", "F8_E4M3": "uint8", "F8_E8M0": "uint8",
        "F8_E4M3FNUZ": "uint8", "F8_E5M2FNUZ": "uint8", "F4": "uint8", "F6_E2M3": "uint8", "F6_E3M2": "uint8"}
_FROM_NUMPY = {v: k for k, v in _NUMPY_DTYPES.items()}

if torch is not None:
    _TORCH_DTYPES = {
        torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
        torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.int64: "I64",
        torch.float64: "F64", torch.complex64: "C64",
    }
    _TORCH_FROM = {v: k for k, v in _TORCH_DTYPES.items()}
else:
    _TORCH_DTYPES, _TORCH_FROM = {}, {}


def _tensor_entry(name, value):
    """(name, dtype, shape, buffer) for a torch tensor or numpy array."""
    if torch is not None and isinstance(value, torch.Tensor):
        if value.dtype not in _TORCH_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {value.dtype}, which safetensors cannot store")
        t = value.detach().to("cpu").contiguous()
        dtype = _TORCH_DTYPES[t.dtype]
        shape = list(t.shape)
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return (name, dtype, shape, t.reshape(-1).numpy())
    if np is not None and isinstance(value, np.ndarray):
        key = value.dtype.name
        if key not in _FROM_NUMPY:
            raise ValueError(f"array {name!r} has dtype {value.dtype}, which safetensors cannot store")
        a = np.ascontiguousarray(value)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        return (name, _FROM_NUMPY[key], list(a.shape), a.reshape(-1).view(np.uint8))
    raise ValueError(f"{name!r} is a {type(value).__name__}; pass torch tensors or numpy arrays")


def _state_of(layer):
    if torch is not None and isinstance(layer, torch.nn.Module):
        return layer.state_dict()
    if isinstance(layer, dict) or hasattr(layer, "items"):
        return dict(layer.items())
    raise ValueError("layer must be a torch.nn.Module, or a dict of torch tensors or numpy arrays; "
                     f"got {type(layer).__name__}")


def _array(dtype, shape, view):
    """A read-only numpy array over `view` (no copy)."""
    np_dtype = _NUMPY_DTYPES.get(dtype) or _RAW[dtype]
    arr = np.frombuffer(view, dtype=np_dtype)
    if dtype in ("F4", "F6_E2M3", "F6_E3M2"):
        return arr  # packed sub-byte values: the raw bytes
    return arr.reshape(shape)


def _as_torch(dtype, arr):
    """A torch view of a numpy array, or None when torch has no such dtype."""
    if torch is None:
        return None
    if dtype == "BF16":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only buffer: the cache owns it
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    if dtype not in _TORCH_FROM:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


class LayerTensors(dict):
    """A layer's tensors by name, viewing the cache's memory (no copy).

    Values are torch tensors (numpy arrays where torch has no such dtype, or
    without torch). ``data_address`` and ``nbytes`` describe the buffer."""

    def __init__(self, core_layer):
        super().__init__()
        self._core_layer = core_layer  # keeps the buffer alive
        self.metadata = dict(core_layer.metadata)
        for name, dtype, shape, view, _owner in core_layer.tensors():
            arr = _array(dtype, shape, view)
            tensor = _as_torch(dtype, arr)
            self[name] = tensor if tensor is not None else arr

    @property
    def data_address(self):
        return self._core_layer.data_address()

    @property
    def nbytes(self):
        return self._core_layer.nbytes


def _meta_skeleton(module):
    """A copy of `module` whose parameters and buffers are empty meta tensors."""
    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(
            t, torch.nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def _load_into(module, tensors):
    """Points `module`'s parameters and buffers at `tensors` (no copy)."""
    expected = set(module.state_dict().keys())
    missing = expected - set(tensors.keys())
    if missing:
        raise ValueError(f"the cached layer lacks {sorted(missing)} needed by {type(module).__name__}")
    for name, value in tensors.items():
        if name not in expected:
            continue
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        if not isinstance(value, torch.Tensor):
            value = torch.from_numpy(np.array(value))
        if leaf in owner._parameters:
            owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
        else:
            owner._buffers[leaf] = value
    module._layercache_tensors = tensors  # keeps the cache's buffer alive with the module
    return module


class LayerCache:
    """The seed's LayerCache on the layercache C++ engine.

    Parameters, defaults and returns are the seed's; ``checksum_algorithm``
    ("xxh3-128", "md5", "sha256") is new. Bad arguments raise ValueError; I/O
    failures raise OSError; a miss is None. Thread-safe: the GIL is released
    during loads and I/O."""

    def __init__(self, cache_dir=None, max_cache_size_gb=50.0, max_memory_cache_size_gb=2.0,
                 enable_compression=False, compression_level=6, persist_metadata=True,
                 checksum_algorithm="xxh3-128", eviction_policy="lru", disk_read_mode="buffered",
                 prefetch_threads=2, remote=None, remote_timeout_ms=1000):
        # remote: a redis:// URL or a list of them (Redis Cluster seeds); None
        # uses $LAYERCACHE_REMOTE if set (docs/SCALE_OUT.md).
        if isinstance(remote, (str, os.PathLike)):
            remote = [os.fspath(remote)]
        self._core = _core.Cache(os.fspath(cache_dir) if cache_dir is not None else "",
                                 float(max_cache_size_gb), float(max_memory_cache_size_gb),
                                 bool(enable_compression), int(compression_level), bool(persist_metadata),
                                 str(checksum_algorithm), str(eviction_policy), str(disk_read_mode),
                                 int(prefetch_threads), [str(u) for u in (remote or [])],
                                 int(remote_timeout_ms))
        self._skeletons = {}  # model_id -> meta skeleton of its layers
        self._factories = {}  # model_id -> callable(layer_index) -> module
        self._lock = threading.Lock()

    @property
    def cache_dir(self):
        return self._core.cache_dir

    def register_module_factory(self, model_id, factory):
        """get_layer(model_id, i) will return factory(i) with the cached weights."""
        with self._lock:
            self._factories[model_id] = factory

    def _module_for(self, model_id, layer_index):
        with self._lock:
            factory = self._factories.get(model_id)
            skeleton = self._skeletons.get(model_id)
        if factory is not None:
            return factory(layer_index)
        if skeleton is not None:
            return copy.deepcopy(skeleton)
        return None

    def _wrap(self, core_layer, model_id, layer_index, module):
        if core_layer is None:
            return None
        tensors = LayerTensors(core_layer)
        if torch is None:
            return tensors
        if module is None:
            module = self._module_for(model_id, layer_index)
        return _load_into(module, tensors) if module is not None else tensors

    def get_layer(self, model_id, layer_index, quantization_mode=None, device="cpu", module=None):
        """The cached layer, or None. With ``module``, its weights are pointed
        at the cached tensors and the module is returned."""
        if str(device) != "cpu":
            raise ValueError(f"device {device!r} is not supported yet: layers are returned in CPU memory; "
                             "pass device='cpu' and move them with .to()")
        core_layer = self._core.get_layer(model_id, int(layer_index), quantization_mode or "", "")
        return self._wrap(core_layer, model_id, layer_index, module)

    def cache_layer(self, model_id, layer_index, layer, quantization_mode=None):
        """Caches a torch.nn.Module (its state_dict) or a dict of torch tensors
        or numpy arrays. True when the layer reached the disk tier."""
        if torch is not None and isinstance(layer, torch.nn.Module):
            with self._lock:
                if model_id not in self._skeletons:
                    self._skeletons[model_id] = _meta_skeleton(layer)
        entries = [_tensor_entry(name, value) for name, value in _state_of(layer).items()]
        core_layer = _core.build_layer(entries, {})
        return bool(self._core.cache_layer(model_id, int(layer_index), core_layer, quantization_mode or ""))

    def prefetch(self, model_id, layer_indices, quantization_mode=None):
        """Starts loading cached layers from disk into memory in the background.
        Returns one future per index; ``future.result()`` is the layer or None."""
        futures = self._core.prefetch(model_id, [int(i) for i in layer_indices], quantization_mode or "")
        return [_LayerFuture(self, f, model_id, i) for f, i in zip(futures, layer_indices)]

    def get_layer_with_prefetch(self, model_id, layer_index, num_layers, lookahead=2, quantization_mode=None,
                                module=None):
        """The seed's IOOptimizer call: layer ``layer_index``, after starting to
        prefetch the next ``lookahead`` layers (wrapping at ``num_layers``)."""
        if not 0 <= layer_index < num_layers:
            raise ValueError(f"layer_index must be in [0, {num_layers}), got {layer_index}")
        nxt = [(layer_index + k) % num_layers for k in range(1, min(lookahead, num_layers - 1) + 1)]
        self._core.prefetch(model_id, nxt, quantization_mode or "")
        return self.get_layer(model_id, layer_index, quantization_mode, module=module)

    def download_and_cache(self, model_id, layer_index, repo_id, filename=None, revision="main",
                           connections=8, quiet=False, layer_pattern=None, endpoint=None, token=None,
                           offline=False, max_retries=5, module=None, **kwargs):
        """Downloads one layer's bytes from the Hugging Face Hub (range requests)
        and caches it; returns the layer. Raises OSError when it cannot."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return self._wrap(self._core.download_and_cache(
            model_id, int(layer_index), repo_id, filename or "",
            self._options(revision, connections, quiet, layer_pattern, endpoint, token, offline, max_retries),
            False),
            model_id, layer_index, module)

    def download_non_layer_tensors(self, model_id, repo_id, filename=None, **options):
        """Embeddings, final norm and lm_head, by full name."""
        core_layer = self._core.download_and_cache(model_id, 0, repo_id, filename or "",
                                                   self._options(**options), True)
        return LayerTensors(core_layer)

    @staticmethod
    def _options(revision="main", connections=8, quiet=False, layer_pattern=None, endpoint=None, token=None,
                 offline=False, max_retries=5):
        o = _core.DownloadOptions()
        o.revision = revision or "main"
        o.connections = int(connections)
        o.quiet = bool(quiet)
        o.layer_pattern = layer_pattern or ""
        o.endpoint = endpoint or ""
        o.token = token or ""
        o.offline = bool(offline)
        o.max_retries = int(max_retries)
        return o

    def import_checkpoint(self, directory, model_id, layers=None, layer_pattern=None):
        """Caches the layers of a local safetensors checkpoint; returns how many entries."""
        return self._core.import_checkpoint(os.fspath(directory), model_id, list(layers or []),
                                            layer_pattern or "")

    def invalidate_cache(self, model_id=None, layer_index=None):
        """Removes one layer, a model's layers, or (no arguments) everything."""
        return self._core.invalidate_cache(model_id, None if layer_index is None else int(layer_index))

    def clear_cache(self):
        self._core.clear_cache()

    def verify_cache_integrity(self):
        """The corrupted entries: dicts with model_id, layer_index,
        quantization_mode, path and reason. Changes nothing."""
        return self._core.verify_cache_integrity()

    def flush(self):
        """Waits until layers being published to the remote tier are there."""
        self._core.flush()

    def optimize_cache(self):
        """Removes corrupted entries, temp files and orphans; enforces the budget."""
        return self._core.optimize_cache()

    def get_stats(self):
        """The seed's statistics dict (plus more counters)."""
        return json.loads(self._core.stats_json())

    def print_stats(self):
        sys.stdout.write(self._core.stats_text())
        sys.stdout.flush()


class _LayerFuture:
    """A layer being prefetched."""

    def __init__(self, cache, future, model_id, layer_index):
        self._cache, self._future, self._model_id, self._layer_index = cache, future, model_id, layer_index

    def done(self):
        return self._future.done()

    def result(self):
        """Waits (without holding the GIL) and returns the layer, or None."""
        return self._cache._wrap(self._future.result(), self._model_id, self._layer_index, None)


_global = None
_global_lock = threading.Lock()


def get_layer_cache(**kwargs):
    """The process-wide LayerCache, created with ``kwargs`` on the first call."""
    global _global
    with _global_lock:
        if _global is None:
            _global = LayerCache(**kwargs)
        elif kwargs:
            warnings.warn("get_layer_cache: the global cache already exists; the arguments are ignored")
        return _global


def reset_layer_cache():
    """Forgets the process-wide LayerCache."""
    global _global
    with _global_lock:
        _global = None
