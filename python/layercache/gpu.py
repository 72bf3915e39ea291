"""Layers in GPU memory for Python: ``get_layer(..., device='cuda:N')``.

The C++ GPU tier copies the layer to the device (from memory, or straight from its disk entry through
pinned buffers); the tensors are handed to torch with DLPack, without a further copy. Needs a torch
built with CUDA and a layercache built with CUDA; otherwise the error says which is missing."""

from . import _core

_BYTE_VIEWS = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
               "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu"}


def check_torch_cuda(device):
    """Raises RuntimeError naming the reason when torch cannot hold tensors on ``device``."""
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"device={device!r} returns torch CUDA tensors, and torch is not installed") from None
    if torch.version.cuda is None:
        raise RuntimeError(
            f"device={device!r} needs a torch built with CUDA, and the installed torch {torch.__version__} is "
            "CPU-only (Debian's python3-torch is): install a CUDA build of torch (pip install torch), or use "
            "device='cpu'")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r}: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU "
                           "(torch.cuda.is_available() is False: no device or no driver)")
    return torch


def device_layer(cache_core, model_id, layer_index, quantization_mode, revision, device):
    """The layer's tensors on ``device`` as {name: torch CUDA tensor}, or None when it is not cached."""
    device = str(device)
    _core.parse_device(device)  # the C++ rule: ValueError saying what is accepted
    torch = check_torch_cuda(device)
    got = _core.get_device_layer(cache_core, model_id, int(layer_index), quantization_mode or "",
                                 revision or "", device)
    if got is None:
        return None
    tensors, _metadata = got
    out = {}
    for name, dtype, shape, capsule in tensors:
        t = torch.utils.dlpack.from_dlpack(capsule)
        view = _BYTE_VIEWS.get(dtype)
        if view is not None and hasattr(torch, view):
            t = t.view(getattr(torch, view)).reshape(shape)
        out[name] = t
    return out
