"""The seed document's examples, as written, with a small torch module as the layer."""
import json
import threading

import pytest
from needs import need_module

torch = need_module("torch")

from nexus_final.sli.layer_cache import LayerCache, get_layer_cache, reset_layer_cache  # noqa: E402


class TinyBlock(torch.nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(self.norm(x))


def download_from_hub(repo, layer_idx):
    torch.manual_seed(layer_idx)
    return TinyBlock()


def test_quick_start(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, max_cache_size_gb=50.0, max_memory_cache_size_gb=2.0)
    hidden_states = torch.randn(2, 16)
    layer = cache.get_layer("qwen-7b", layer_index=5)
    assert layer is None
    if layer is None:
        layer = download_from_hub("Qwen/Qwen2.5-7B", layer_idx=5)
        cache.cache_layer("qwen-7b", 5, layer)
    output = layer(hidden_states)
    # A hit returns a module with the same weights, computing the same output.
    again = cache.get_layer("qwen-7b", layer_index=5)
    assert isinstance(again, TinyBlock)
    assert torch.equal(again(hidden_states), output)


def test_quick_start_in_a_fresh_process_view(cache_dir):
    first = LayerCache(cache_dir=cache_dir)
    first.cache_layer("qwen-7b", 5, download_from_hub("x", 5))
    reopened = LayerCache(cache_dir=cache_dir)
    tensors = reopened.get_layer("qwen-7b", 5)  # no skeleton known: the tensors
    assert set(tensors) == set(TinyBlock().state_dict())
    module = reopened.get_layer("qwen-7b", 5, module=TinyBlock())
    x = torch.randn(3, 16)
    assert torch.equal(module(x), download_from_hub("x", 5)(x))


def test_global_singleton(cache_dir):
    reset_layer_cache()
    cache = get_layer_cache(cache_dir=cache_dir, max_cache_size_gb=100.0)
    assert get_layer_cache() is cache
    cache.cache_layer("model_id", 3, download_from_hub("x", 3))
    layer = get_layer_cache().get_layer("model_id", 3)
    assert layer is not None
    assert cache.get_stats()["max_disk_cache_size_gb"] == 100.0
    reset_layer_cache()


def test_development_setup(tmp_path):
    cache = LayerCache(cache_dir=str(tmp_path / "dev_cache"), max_cache_size_gb=10.0, max_memory_cache_size_gb=1.0)
    stats = cache.get_stats()
    assert stats["max_disk_cache_size_gb"] == 10.0
    assert stats["max_memory_cache_size_gb"] == 1.0


def test_cache_management(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    for i in range(4):
        assert cache.cache_layer("qwen-7b", i, download_from_hub("x", i)) is True
        cache.cache_layer("other", i, download_from_hub("x", i))
    cache.invalidate_cache("qwen-7b", layer_index=1)
    assert cache.get_layer("qwen-7b", 1) is None
    assert cache.get_layer("qwen-7b", 2) is not None
    cache.invalidate_cache("qwen-7b")
    assert cache.get_layer("qwen-7b", 2) is None
    assert cache.get_layer("other", 0) is not None
    cache.invalidate_cache()
    assert cache.get_layer("other", 0) is None
    cache.cache_layer("m", 0, download_from_hub("x", 0))
    cache.clear_cache()
    assert cache.get_stats()["disk_cache_entries"] == 0


def test_verify_and_optimize_find_and_remove_corruption(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0)
    cache.cache_layer("m", 0, download_from_hub("x", 0))
    assert cache.verify_cache_integrity() == []
    import glob
    (path,) = glob.glob(cache_dir + "/entries/*/*.safetensors")
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0xFF
    open(path, "wb").write(bytes(data))
    corrupted = cache.verify_cache_integrity()
    if corrupted:
        print(f"Found {len(corrupted)} corrupted entries")
        cache.optimize_cache()
    assert len(corrupted) == 1 and corrupted[0]["model_id"] == "m" and "checksum" in corrupted[0]["reason"]
    assert cache.verify_cache_integrity() == []
    assert cache.get_layer("m", 0) is None


def test_statistics(cache_dir, capsys):
    cache = LayerCache(cache_dir=cache_dir)
    cache.cache_layer("m", 0, download_from_hub("x", 0))
    cache.get_layer("m", 0)
    cache.get_layer("m", 1)
    stats = cache.get_stats()
    print(json.dumps(stats, indent=2))
    for key in ["disk_cache_entries", "memory_cache_entries", "disk_cache_size_gb", "memory_cache_size_gb",
                "max_disk_cache_size_gb", "max_memory_cache_size_gb", "performance"]:
        assert key in stats
    perf = stats["performance"]
    assert (perf["total_hits"], perf["total_misses"]) == (1, 1)
    assert perf["cache_hit_ratio"] == 0.5
    evictions = stats["performance"]["total_evictions"]
    hits = stats["performance"]["total_hits"]
    assert not evictions > hits * 0.1
    capsys.readouterr()
    cache.print_stats()
    out = capsys.readouterr().out
    assert "Layer Cache Statistics" in out and "Hit Ratio: 50.0%" in out and "Cache Misses: 1" in out


def test_cache_warmup(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    model_layers = [download_from_hub("x", i) for i in range(6)]
    for layer_idx in range(len(model_layers)):
        layer = model_layers[layer_idx]
        cache.cache_layer("model", layer_idx, layer)
    print("Cache warmup complete")
    assert cache.get_stats()["disk_cache_entries"] == 6


def test_quantization_mode_is_part_of_the_key(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    cache.cache_layer("model", 5, download_from_hub("x", 5), quantization_mode="nf4")
    assert cache.get_layer("model", 5) is None
    assert cache.get_layer("model", 5, quantization_mode="nf4") is not None
