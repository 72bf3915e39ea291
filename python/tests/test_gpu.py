"""device='cuda:N': CUDA tensors through DLPack where torch and layercache have CUDA and a GPU exists;
elsewhere a clear error naming what is missing (Debian's torch is CPU-only)."""
import pytest
from needs import need_module

torch = need_module("torch")

from layercache import LayerCache  # noqa: E402


def test_malformed_device_is_a_value_error(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    for bad in ("tpu:0", "cuda:x", "cuda:-1", "gpu"):
        with pytest.raises(ValueError, match="not understood"):
            cache.get_layer("m", 0, device=bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the next test covers it")
def test_without_a_usable_cuda_torch_the_error_says_why(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    cache.cache_layer("m", 0, {"w": torch.ones(4)})
    with pytest.raises(RuntimeError) as e:
        cache.get_layer("m", 0, device="cuda:0")
    if torch.version.cuda is None:
        assert "CPU-only" in str(e.value) and torch.__version__ in str(e.value)
    else:
        assert "sees no GPU" in str(e.value)


def test_cuda_tensors_without_a_copy(cache_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    cache = LayerCache(cache_dir=cache_dir)
    state = {"w": torch.randn(64, 32).to(torch.bfloat16), "b": torch.arange(10, dtype=torch.int64)}
    assert cache.cache_layer("m", 0, state)
    layer = cache.get_layer("m", 0, device="cuda:0")
    assert set(layer) == set(state)
    for name, value in state.items():
        assert layer[name].is_cuda and layer[name].device.index == 0
        assert torch.equal(layer[name].cpu(), value), name
    assert cache.get_layer("m", 1, device="cuda:0") is None
