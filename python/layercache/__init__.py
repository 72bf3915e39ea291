"""layercache: a cache of model layers (memory, SSD and Redis tiers) with the API of Nexus SLI's
LayerCache, on the layercache C++ engine.

    from layercache import LayerCache
    cache = LayerCache(cache_dir="~/.cache/nexus/layers", max_cache_size_gb=50.0)
    layer = cache.get_layer("qwen-7b", 5)          # None on a miss
    if layer is None:
        layer = cache.download_and_cache("qwen-7b", 5, "Qwen/Qwen2.5-7B")
    hidden = layer(hidden)                         # a callable nn.Module (Llama, Mistral, Qwen2, GPT-2)

What get_layer returns (docs/PYTHON.md has the details):

1. with ``module=``: that module, its parameters pointed at the cached tensors;
2. for a model with a factory (``register_module_factory``): ``factory(layer_index)``, filled;
3. for an entry cached from a module with a module spec (``cache_layer(..., module_spec=...)``,
   ``__layercache_spec__``, layercache's own layers, torch.nn built-ins) whose class is allow-listed
   (layercache.modules.allow_module_class): a new instance of that class, filled;
4. for a layer of a model whose config.json the cache has (fetched by download_and_cache, read by
   import_checkpoint, or ``cache_layer(..., config=...)``) of a family layercache knows (Llama,
   Mistral, Qwen2, GPT-2) whose tensor names match: layercache.models' decoder layer, filled;
5. otherwise a ``LayerTensors`` mapping of name to ``torch.Tensor`` (numpy arrays without torch).

The tensors are private copy-on-write mappings of the cache's bytes (no copy; layers under 16 MiB are
copied): writes to them stay yours and never reach the cache. The objects built for a layer are reused
by later hits while the layer's bytes and the objects are unchanged (torch in-place changes make the next
hit build pristine ones).
"""

import json
import os
import sys
import threading
import warnings
import weakref

from . import _core
# C++ messages -> logging.getLogger("layercache"); checks LAYERCACHE_LOG.
from ._logbridge import flush_logs, get_log_level, set_log_level

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dependency of the module
    np = None

try:
    import torch
except ImportError:
    torch = None

__version__ = _core.__version__

# Large layer buffers live in a memory file, so that what get_layer hands out is a private
# copy-on-write mapping of the cache's bytes rather than a copy (docs/PYTHON.md, "writes").
# LAYERCACHE_COPY_ON_WRITE=0 makes every build copy instead.
_core.set_file_backed_buffers(os.environ.get("LAYERCACHE_COPY_ON_WRITE", "1") != "0")
# Layers under this size are copied: the copy costs less than a mapping's page faults (docs/PYTHON.md).
_COPY_ON_WRITE_MIN = int(float(os.environ.get("LAYERCACHE_COPY_ON_WRITE_MIN_MB", "16")) * (1 << 20))

__all__ = ["LayerCache", "LayerTensors", "get_layer_cache", "reset_layer_cache", "flush_logs",
           "get_log_level", "set_log_level"]

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


def _index(value, what="layer_index"):
    """An integer argument: an int (or anything with __index__, e.g. a numpy integer), never a
    bool, str or float silently converted (layer "3" or 2.7 is a caller's mistake)."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    return value.__index__()


def _model(value):
    """A model id: a str (a Path, bytes or None is a caller's mistake, said as such)."""
    if not isinstance(value, str):
        raise TypeError(f"model_id must be a str, got {type(value).__name__} {value!r}")
    return value


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


def _array(dtype, shape, raw):
    """A numpy array over the uint8 array `raw` (no copy)."""
    np_dtype = _NUMPY_DTYPES.get(dtype) or _RAW[dtype]
    arr = raw.view(np_dtype)
    if dtype in ("F4", "F6_E2M3", "F6_E3M2"):
        return arr  # packed sub-byte values: the raw bytes
    return arr.reshape(shape)


class LayerTensors(dict):
    """A layer's tensors by name, over private, writable bytes of the layer: a copy-on-write
    mapping of the cache's bytes (``copy_on_write`` True: no copy; a write copies the page it
    touches) or, for layers under 16 MiB, a copy.

    Values are torch tensors (numpy arrays where torch has no such dtype, or without torch), all
    views of one byte tensor (``base``), so that they share one torch version counter: an in-place
    change to any of them is seen by the cache, which then builds pristine objects for the next
    get_layer (docs/PYTHON.md, "writes"). ``metadata`` is the entry's metadata; ``data_address``
    and ``nbytes`` describe the buffer."""

    def __init__(self, core_layer):
        super().__init__()
        self._core_layer = core_layer
        self.metadata = dict(core_layer.metadata)
        whole, tensors, how = core_layer.private_tensors(_COPY_ON_WRITE_MIN)
        self.copy_on_write = how == "mapped"
        raw = np.frombuffer(whole, dtype=np.uint8)
        self.base = torch.from_numpy(raw) if torch is not None else None
        for name, dtype, shape, offset, nbytes in tensors:
            if self.base is not None and (dtype == "BF16" or dtype in _TORCH_FROM):
                t = self.base[offset:offset + nbytes].view(_TORCH_FROM.get(dtype, torch.bfloat16))
                self[name] = t.view(shape)
            else:
                self[name] = _array(dtype, shape, raw[offset:offset + nbytes])
        self._data_address = raw.ctypes.data if raw.size else 0

    @property
    def data_address(self):
        """Where this mapping's (private) bytes start."""
        return self._data_address

    @property
    def nbytes(self):
        return self._core_layer.nbytes


def _meta_skeleton(module):
    """A copy of `module` whose parameters and buffers are empty meta tensors."""
    import copy
    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(
            t, torch.nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def _load_into(module, tensors):
    """Points `module`'s parameters and buffers at `tensors` (no copy); returns
    the tensors the module now holds."""
    expected = module.state_dict(keep_vars=True)
    missing = set(expected) - set(tensors)
    if missing:
        raise ValueError(f"the cached layer lacks {sorted(missing)} needed by {type(module).__name__}")
    held = []
    for name, current in expected.items():
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            value = torch.from_numpy(np.array(value))
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(f"the cached tensor {name!r} has shape {tuple(value.shape)} but "
                             f"{type(module).__name__} needs {tuple(current.shape)}")
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        if leaf in owner._parameters:
            value = torch.nn.Parameter(value, requires_grad=False)
            owner._parameters[leaf] = value
        else:
            owner._buffers[leaf] = value
        held.append(value)
    module._layercache_tensors = tensors  # keeps the cache's buffer alive with the module
    return held


def _versions(tensors):
    """The sum of the tensors' version counters (torch bumps them on every in-place change)."""
    v = 0
    for t in tensors:
        v += t._version
    return v


_OPTION_NAMES = ("cache_dir", "max_cache_size_gb", "max_memory_cache_size_gb", "enable_compression",
                 "compression_level", "persist_metadata", "checksum_algorithm", "eviction_policy",
                 "disk_read_mode", "prefetch_threads", "worker_threads", "remote_urls", "remote_timeout_ms",
                 "remote_chunk_mb", "remote_lease_ms", "remote_wait_ms", "remote_ttl_s",
                 "max_gpu_cache_size_gb", "pin_memory_layers")


def make_options(**kwargs):
    """The C++ LayerCacheOptions (``_core.Options``) from the seed's keyword names. ``remote`` is a
    redis:// URL or a list of them (``remote_urls``); ``cache_dir=None`` is the default folder."""
    o = _core.Options()
    if "remote" in kwargs:
        remote = kwargs.pop("remote")
        if isinstance(remote, (str, os.PathLike)):
            remote = [remote]
        kwargs.setdefault("remote_urls", remote)
    unknown = sorted(set(kwargs) - set(_OPTION_NAMES))
    if unknown:
        raise TypeError(f"LayerCache got unexpected arguments {unknown}; the options are "
                        f"{', '.join(_OPTION_NAMES)} and remote")
    for name, value in kwargs.items():
        if value is None:
            continue
        if name == "cache_dir":
            value = os.fspath(value)
        elif name == "remote_urls":
            value = [os.fspath(u) for u in value]
        setattr(o, name, value)
    return o


_STORED_SETTINGS = ("max_cache_size_gb", "enable_compression", "compression_level",
                    "checksum_algorithm", "eviction_policy")


class LayerCache:
    """The seed's LayerCache on the layercache C++ engine.

    Parameters, defaults and returns are the seed's; every other option of the
    C++ LayerCacheOptions is a keyword too (``checksum_algorithm``,
    ``eviction_policy``, ``disk_read_mode``, ``prefetch_threads``, ``worker_threads``, ``remote``
    or ``remote_urls``, ``remote_timeout_ms``, ``remote_chunk_mb``,
    ``remote_lease_ms``, ``remote_wait_ms``, ``remote_ttl_s``, ``max_gpu_cache_size_gb``,
    ``pin_memory_layers``). Bad arguments
    raise ValueError; I/O failures raise OSError; a miss is None. Thread-safe:
    the GIL is released during loads and I/O."""

    def __init__(self, cache_dir=None, max_cache_size_gb=None, max_memory_cache_size_gb=2.0,
                 enable_compression=None, compression_level=None, persist_metadata=True, **options):
        # The settings the cache directory stores (docs/PYTHON.md "Settings stored in the cache"):
        # max_cache_size_gb, enable_compression, compression_level, checksum_algorithm and
        # eviction_policy not passed (None) are the cache's; passed ones are for this process only
        # (and recorded when this call creates the cache). Unstored: 50.0, False, 6, xxh3-128,
        # scan-resistant.
        given = {k for k, v in dict(options, max_cache_size_gb=max_cache_size_gb,
                                    enable_compression=enable_compression,
                                    compression_level=compression_level).items()
                 if v is not None and k in _STORED_SETTINGS}
        o = make_options(cache_dir=cache_dir, max_cache_size_gb=max_cache_size_gb,
                         max_memory_cache_size_gb=max_memory_cache_size_gb,
                         enable_compression=enable_compression, compression_level=compression_level,
                         persist_metadata=persist_metadata, **options)
        self._setup(_core.Cache(_core.apply_stored_settings(o, given)))

    @classmethod
    def _of_core(cls, core):
        self = cls.__new__(cls)
        self._setup(core)
        return self

    def _setup(self, core):
        self._core = core
        self._factories = {}  # model_id -> callable(layer_index) -> module
        self._skeletons = {}  # (model, layer, quant, revision) -> meta copy of a module without a spec
        self._configs = {}  # (model, revision) -> config dict
        # The objects built for each (model, layer, quant, revision), handed out again by later hits
        # while the cache returns the same layer and torch's version counters say they were not
        # changed in place (C++: _core.HitPath). At most the memory tier's budget of layers is kept
        # (oldest first out), so layers evicted from the cache are not held for long.
        budget = int(float(core_options_memory_gb(core)) * (1 << 30))
        # The C++ side holds these functions, which reach this object through a weak reference only:
        # a LayerCache is freed (and its C++ cache closed) as soon as the program drops it.
        me = weakref.ref(self)

        def live():
            # Dropped during the call (`LayerCache(...).get_layer(...)`): a wrapper of the same C++ cache.
            obj = me()
            return obj if obj is not None else LayerCache._of_core(core)

        def build(*args):
            return live()._build_for_hit(*args)

        def slow(*args, **kwargs):
            return live()._get_layer_slow(*args, **kwargs)

        self._hits = _core.HitPath(core, build, slow, budget)
        # The fast path: a C function (a memory hit costs about a dict lookup; docs/PYTHON.md).
        self.get_layer = self._hits.get_layer_function()
        self._lock = threading.Lock()
        from . import modules
        modules._caches.add(self)

    @property
    def cache_dir(self):
        return self._core.cache_dir

    # ---- what get_layer returns ------------------------------------------------------------

    def register_module_factory(self, model_id, factory):
        """get_layer(model_id, i) will return factory(i) with the cached weights."""
        with self._lock:
            self._factories[model_id] = factory
            self._forget(model_id)

    def _config(self, model_id, revision):
        key = (model_id, revision)
        cfg = self._configs.get(key)
        if cfg is None:
            text = self._core.model_config(model_id, revision)
            if not text:
                return None
            try:
                cfg = json.loads(text)
            except ValueError:
                return None
            self._configs[key] = cfg
        return cfg

    def _module_for(self, tensors, key):
        from . import modules
        model_id, layer_index, quant, revision = key
        factory = self._factories.get(model_id)
        if factory is not None:
            return factory(layer_index), True
        spec = tensors.metadata.get(modules.SPEC_KEY)
        if spec:
            m = modules.module_from_spec(spec)
            if m is not None:
                return m, False
        skeleton = self._skeletons.get(key)
        if skeleton is not None:
            import copy
            return copy.deepcopy(skeleton), False
        if not quant:
            from . import models
            cfg = self._config(model_id, revision)
            if cfg is not None and models.family_of(cfg):
                return models.layer_from_config(cfg), False
        return None, False

    def _build(self, core_layer, key, module=None, dequantize=False):
        """(object, the tensors whose versions tell whether it was changed)."""
        tensors = LayerTensors(core_layer)
        if key[2] or dequantize or "quantization" in tensors.metadata:
            from . import quantization  # quantized layers: layercache/quantization.py
            built = quantization.build_for_cache(self, tensors, key, module, dequantize, _load_into)
            if built is not None:
                return built
        if torch is None:
            return tensors, []
        strict = module is not None
        if module is None:
            module, strict = self._module_for(tensors, key)
        # Every tensor (and every parameter made from one) shares the base's version counter.
        held = [tensors.base] if any(isinstance(t, torch.Tensor) for t in tensors.values()) else []
        if module is None:
            return tensors, held
        try:
            _load_into(module, tensors)
            return module, held
        except ValueError:
            if strict:
                raise
            return tensors, held

    def _build_for_hit(self, core_layer, model_id, layer_index, quant, revision):
        return self._build(core_layer, (model_id, layer_index, quant, revision))

    def _forget(self, model_id=None, layer_index=None):
        self._hits.forget(model_id, None if layer_index is None else _index(layer_index))

    def get_layer(self, model_id, layer_index, quantization_mode=None, device="cpu", module=None,
                  revision=None, dequantize=False):
        """The cached layer (see the module's doc for its type), or None.

        ``revision`` None: the commit the model's default revision last resolved to in this cache,
        else the layer cached without a revision (docs/PYTHON.md). (Each instance's get_layer is
        the C fast path, which comes here for ``module=``, a device or unusual argument types.)

        A quantized layer ("nf4", "int8": layercache.quantization) comes back with its projections as
        ``Linear4bit`` / ``LinearInt8`` holding the packed weights (dequantized in forward), or with
        ``dequantize=True`` as a plain layer; a ``quantization_mode`` that does not match what is
        stored raises ValueError."""
        return self._get_layer_slow(model_id, layer_index, quantization_mode, device, module, revision,
                                    dequantize)

    def _get_layer_slow(self, model_id, layer_index, quantization_mode=None, device="cpu", module=None,
                        revision=None, dequantize=False):
        key = (_model(model_id), _index(layer_index), quantization_mode or "", revision or "")
        if str(device) != "cpu":  # {name: torch CUDA tensor} through the GPU tier (layercache.gpu)
            from . import gpu
            return gpu.device_layer(self._core, model_id, key[1], key[2], key[3], device)
        core_layer = self._core.get_layer(model_id, key[1], key[2], key[3], str(device))
        if core_layer is None:
            return None
        return self._build(core_layer, key, module, bool(dequantize))[0]

    def get_layer_with_prefetch(self, model_id, layer_index, num_layers, lookahead=2, quantization_mode=None,
                                revision=None):
        """The seed's IOOptimizer call: starts prefetching the next ``lookahead`` layers (wrapping at
        ``num_layers``) on the C++ prefetch threads, then returns layer ``layer_index`` (or None)."""
        return self._hits.get_layer_with_prefetch(model_id, _index(layer_index), _index(num_layers, "num_layers"), int(lookahead),
                                                  quantization_mode or "", revision or "")

    def prefetch(self, model_id, layer_indices, quantization_mode=None, revision=None):
        """Starts loading cached layers from disk into memory in the background.
        Returns one future per index; ``future.result()`` is the layer or None."""
        futures = self._core.prefetch(_model(model_id), [_index(i) for i in layer_indices], quantization_mode or "",
                                      revision or "")
        return [_LayerFuture(self, f, (model_id, i, quantization_mode or "", revision or ""))
                for f, i in zip(futures, layer_indices)]

    # ---- filling the cache -----------------------------------------------------------------

    def cache_layer(self, model_id, layer_index, layer, quantization_mode=None, module_spec=None, config=None,
                    revision=None):
        """Caches a torch.nn.Module (its state_dict) or a dict of torch tensors or numpy arrays. True
        when the layer reached the disk tier.

        A module's class and constructor arguments are recorded as its module spec (``module_spec``,
        else its ``__layercache_spec__()``) so that any process can rebuild it (if allow-listed);
        ``config`` (the model's config.json as a dict) makes a tensor dict of a known family
        rebuildable as layercache's decoder layer, and is kept as the model's config."""
        from . import models, modules
        key = (_model(model_id), _index(layer_index), quantization_mode or "", revision or "")
        metadata = {}
        if torch is not None and isinstance(layer, torch.nn.Module):
            spec = modules.spec_of(layer, module_spec)
            if spec is not None:
                metadata[modules.SPEC_KEY] = spec
            else:
                with self._lock:
                    self._skeletons[key] = _meta_skeleton(layer)
        elif module_spec is not None:
            metadata[modules.SPEC_KEY] = modules.spec_of(None, module_spec)
        elif isinstance(layer, LayerTensors) and modules.SPEC_KEY in layer.metadata:
            metadata[modules.SPEC_KEY] = layer.metadata[modules.SPEC_KEY]
        if config is not None:
            cfg = json.loads(config) if isinstance(config, (str, bytes)) else dict(config)
            cls = models.layer_class_for(cfg)
            if cls is not None and modules.SPEC_KEY not in metadata:
                metadata[modules.SPEC_KEY] = modules.spec_of(
                    None, {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": {"config": cfg}})
            self._core.save_model_config(model_id, key[3], json.dumps(cfg))
            self._configs.pop((model_id, key[3]), None)
        if key[2] or not isinstance(layer, dict) or "quantization" in getattr(layer, "metadata", {}):
            from . import quantization  # "nf4"/"int8": quantized here if it is not yet
            layer, qmeta = quantization.prepare_for_cache(layer, key[2])
            metadata.update(qmeta)
        entries = [_tensor_entry(name, value) for name, value in _state_of(layer).items()]
        core_layer = _core.build_layer(entries, metadata)
        ok = self._core.cache_layer(model_id, key[1], core_layer, key[2], key[3])
        with self._lock:
            self._forget(model_id, key[1])
        return bool(ok)

    def download_and_cache(self, model_id, layer_index, repo_id, filename=None, revision="main",
                           connections=8, quiet=False, layer_pattern=None, endpoint=None, token=None,
                           offline=False, max_retries=5, module=None, quantization_mode=None,
                           quantization_config=None, **kwargs):
        """Downloads one layer's bytes from the Hugging Face Hub (range requests) and caches it, with
        the model's config.json; returns the layer (a callable module for the known families).
        With ``quantization_mode`` "nf4" / "int8" (or a ``quantization_config`` from
        layercache.quantization) the layer is quantized in C++ before it is cached (the unquantized
        bytes never reach a tier) and cached under that mode. Raises OSError when it cannot."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        o = self._options(revision, connections, quiet, layer_pattern, endpoint, token, offline, max_retries)
        if quantization_config is not None or quantization_mode:
            from . import quantization
            qc = quantization_config or quantization.config_for_mode(quantization_mode)
            if quantization_mode and qc.mode != str(quantization_mode).lower():
                raise ValueError(f"quantization_mode={quantization_mode!r} but the config is {qc.mode!r}")
            o.set_quantize(qc.mode, qc.blocksize or 64, qc.double_quant, qc.min_elements, qc.quantize_embeddings)
            quantization_mode = qc.mode
        core_layer = self._core.download_and_cache(model_id, _index(layer_index), repo_id, filename or "", o, False)
        if core_layer is None:
            return None
        rev = "" if revision in (None, "", "main") else revision
        return self._build(core_layer, (model_id, _index(layer_index), quantization_mode or "", rev), module)[0]

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

    def import_checkpoint(self, directory, model_id, layers=None, layer_pattern=None, revision=None,
                          include_non_layer=True, quiet=False):
        """Caches the layers of a local safetensors checkpoint (and its config.json); returns how many
        entries. ``layers``: the indices to import (all when None); ``include_non_layer``: also the
        embeddings, final norm and lm_head. ``revision`` (a commit, such as a Hugging Face cache
        snapshot's) is the entries' revision and becomes the model's default revision in this cache, so
        ``get_layer(model_id, i)`` without one finds them (docs/PYTHON.md, "The revision rule"); None
        stores them without a revision. On a terminal a progress bar is drawn on stderr unless
        ``quiet``."""
        if revision is not None and not isinstance(revision, str):
            raise ValueError(f"revision must be a string, got {type(revision).__name__}")
        n = self._core.import_checkpoint(os.fspath(directory), model_id, [int(i) for i in (layers or [])],
                                         layer_pattern or "", bool(include_non_layer), revision or "",
                                         bool(quiet))
        self._configs = {k: v for k, v in self._configs.items() if k[0] != model_id}
        with self._lock:
            self._forget(model_id)
        return n

    def default_revision(self, model_id):
        """The commit the model's default revision last resolved to in this cache, or None."""
        return self._core.default_revision(model_id) or None

    def model_config(self, model_id, revision=None):
        """The model's config.json (a dict) as the cache keeps it, or None."""
        return self._config(model_id, revision or "")

    # ---- maintenance -------------------------------------------------------------------------

    def invalidate_cache(self, model_id=None, layer_index=None, revision=None):
        """Removes one layer, a model's layers, or (no arguments) everything; with ``revision`` (a
        commit or a prefix of 7+ characters) only the entries of that revision."""
        if revision is not None:
            if model_id is None:
                raise ValueError("revision given without model_id; pass the model too")
            n = self._core.invalidate_revision(model_id, None if layer_index is None else _index(layer_index),
                                               str(revision))
            with self._lock:
                self._forget(model_id, layer_index)
            return n
        n = self._core.invalidate_cache(model_id, None if layer_index is None else _index(layer_index))
        with self._lock:
            self._forget(model_id, layer_index)
        return n

    def clear_cache(self):
        self._core.clear_cache()
        with self._lock:
            self._forget()

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

    def metrics_text(self):
        """get_stats() and latency histograms in the Prometheus text format
        (serve it from a /metrics endpoint)."""
        return self._core.metrics_text()

    def print_stats(self):
        sys.stdout.write(self._core.stats_text())
        sys.stdout.flush()


def core_options_memory_gb(core):
    try:
        return core.options().max_memory_cache_size_gb
    except AttributeError:
        return 2.0


class _LayerFuture:
    """A layer being prefetched."""

    def __init__(self, cache, future, key):
        self._cache, self._future, self._key = cache, future, key

    def done(self):
        return self._future.done()

    def result(self):
        """Waits (without holding the GIL) and returns the layer, or None."""
        core_layer = self._future.result()
        if core_layer is None:
            return None
        return self._cache._build(core_layer, self._key)[0]


_global = None
_global_lock = threading.Lock()


def get_layer_cache(**kwargs):
    """The process-wide LayerCache (the C++ layercache::get_layer_cache), created with ``kwargs`` on the
    first call; later calls with other options get the same cache (and a warning)."""
    global _global
    options = None
    if kwargs:  # the cache's stored settings for those not passed, as LayerCache(...)
        given = {k for k, v in kwargs.items() if v is not None and k in _STORED_SETTINGS}
        options = _core.apply_stored_settings(make_options(**kwargs), given)
    core = _core.get_layer_cache(options)
    with _global_lock:
        if _global is None or _global._core is not core:
            _global = LayerCache._of_core(core)
        return _global


def reset_layer_cache():
    """Forgets the process-wide LayerCache."""
    global _global
    with _global_lock:
        _core.reset_layer_cache()
        _global = None
