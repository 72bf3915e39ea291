"""Tensors in and out: dtypes, zero copy, threads, processes, errors."""
import os
import subprocess
import sys
import threading

import pytest
from needs import need, need_module

np = need_module("numpy")
torch = need_module("torch")

import layercache  # noqa: E402 (after the module checks)
from layercache import LayerCache  # noqa: E402

TORCH_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
                torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]


def sample(dtype, shape=(3, 5)):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=torch.float32 if dtype != torch.complex64 else torch.complex64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, dtype=dtype)


def test_every_torch_dtype_round_trips_bit_exactly(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0)  # through the disk
    state = {f"t_{str(d).split('.')[-1]}": sample(d) for d in TORCH_DTYPES}
    state["scalar"] = torch.tensor(7, dtype=torch.int64)
    assert cache.cache_layer("m", 0, state)
    back = cache.get_layer("m", 0)
    assert set(back) == set(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype, name
        assert back[name].shape == value.shape, name
        assert torch.equal(back[name], value), name


def test_numpy_arrays_round_trip_including_unsigned_types(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0)
    arrays = {"u16": np.arange(10, dtype=np.uint16) * 6000, "u32": np.arange(6, dtype=np.uint32) * 700000000,
              "u64": np.array([2**63 + 5], dtype=np.uint64), "f32": np.random.rand(4, 4).astype(np.float32),
              "b": np.array([True, False])}
    assert cache.cache_layer("np", 1, arrays)
    back = cache.get_layer("np", 1)
    for name, value in arrays.items():
        got = back[name]
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        assert got.dtype == value.dtype and np.array_equal(got, value), name


def test_get_layer_views_the_cached_buffer_without_copying(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    cache.cache_layer("m", 0, {"w": torch.randn(256, 256), "b": torch.randn(256).to(torch.bfloat16)})
    layer = cache.get_layer("m", 0)
    start, end = layer.data_address, layer.data_address + layer.nbytes
    for t in layer.values():
        assert start <= t.data_ptr() < end
    # The tensors keep the buffer alive after the cache drops it.
    w = layer["w"].clone()
    view = layer["w"]
    del layer
    cache.clear_cache()
    assert torch.equal(view, w)


def test_module_argument_loads_weights_into_a_skeleton(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    src = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    src.eval()
    cache.cache_layer("seq", 0, src)
    skeleton = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8)).eval()
    fresh = LayerCache(cache_dir=cache_dir)
    got = fresh.get_layer("seq", 0, module=skeleton)
    x = torch.randn(4, 8)
    assert got is skeleton and torch.equal(got(x), src(x))


def test_many_threads_share_one_cache(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0.001)
    expected = {i: torch.full((64, 64), float(i)) for i in range(12)}
    errors = []

    def worker(t):
        for n in range(60):
            i = (n * 7 + t) % 12
            layer = cache.get_layer("mt", i)
            if layer is None:
                cache.cache_layer("mt", i, {"w": expected[i]})
            elif not torch.equal(layer["w"], expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.verify_cache_integrity() == []


def test_a_second_process_sees_what_the_first_cached(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    cache.cache_layer("shared", 2, {"w": torch.arange(12, dtype=torch.float32)})
    code = ("import torch, layercache; c = layercache.LayerCache(cache_dir=%r); "
            "l = c.get_layer('shared', 2); print(float(l['w'].sum()))" % cache_dir)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == "66.0"


def test_bad_arguments_raise_value_error(cache_dir):
    with pytest.raises(ValueError, match="max_cache_size_gb"):
        LayerCache(cache_dir=cache_dir, max_cache_size_gb=-1)
    with pytest.raises(ValueError, match="compression_level"):
        LayerCache(cache_dir=cache_dir, compression_level=11)
    cache = LayerCache(cache_dir=cache_dir)
    with pytest.raises(ValueError, match="model_id"):
        cache.get_layer("", 0)
    with pytest.raises(ValueError, match="layer_index"):
        cache.get_layer("m", -1)
    with pytest.raises(ValueError, match="device"):
        cache.get_layer("m", 0, device="tpu:0")
    with pytest.raises(ValueError):
        cache.cache_layer("m", 0, "not a layer")
    with pytest.raises(ValueError):
        cache.download_and_cache("m", 0, "../../etc")


def test_io_failures_raise_os_error(cache_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        LayerCache(cache_dir=str(blocker))
    cache = LayerCache(cache_dir=cache_dir)
    with pytest.raises(OSError):
        cache.download_and_cache("m", 0, "acme/model", endpoint="http://127.0.0.1:1", max_retries=0)


def test_download_and_cache_from_a_local_hub_server(cache_dir, tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli, "LAYERCACHE_CLI is not set (run through ctest)")
    model = tmp_path / "model"
    model.mkdir()
    from safetensors_writer import write_model  # noqa: E402  (tests/ helper)
    tensors = write_model(model, layers=3)
    server = subprocess.Popen([cli, "serve", str(model), "--repo-id", "acme/tiny"], stdout=subprocess.PIPE,
                              text=True)
    try:
        lines = [server.stdout.readline(), server.stdout.readline()]
        endpoint = lines[1].split("=", 1)[1].strip()
        cache = LayerCache(cache_dir=cache_dir)
        layer = cache.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint, quiet=True)
        assert torch.equal(layer["self_attn.q_proj.weight"], tensors["model.layers.1.self_attn.q_proj.weight"])
        extra = cache.download_non_layer_tensors("tiny", "acme/tiny", endpoint=endpoint, quiet=True)
        assert "lm_head.weight" in extra
    finally:
        server.terminate()
        server.wait()


def test_compressed_cache_round_trips_bf16_and_shrinks_it(cache_dir):
    cache = LayerCache(cache_dir=cache_dir, enable_compression=True, compression_level=6,
                       max_memory_cache_size_gb=0)
    w = (torch.randn(512, 512) * 0.02).to(torch.bfloat16)
    assert cache.cache_layer("z", 0, {"w": w, "i": torch.arange(10)})
    back = cache.get_layer("z", 0)
    assert torch.equal(back["w"], w) and torch.equal(back["i"], torch.arange(10))
    stats = cache.get_stats()
    assert stats["disk_compression_ratio"] > 1.2


def test_prefetch_and_get_layer_with_prefetch(cache_dir):
    cache = LayerCache(cache_dir=cache_dir)
    for i in range(4):
        cache.cache_layer("p", i, {"w": torch.full((8,), float(i))})
    fresh = LayerCache(cache_dir=cache_dir, eviction_policy="scan-resistant", prefetch_threads=2)
    futures = fresh.prefetch("p", [1, 2])
    assert [float(f.result()["w"][0]) for f in futures] == [1.0, 2.0]
    layer = fresh.get_layer_with_prefetch("p", 3, num_layers=4, lookahead=1)
    assert float(layer["w"][0]) == 3.0
    assert fresh.prefetch("p", [0])[0].result() is not None
    with pytest.raises(ValueError):
        LayerCache(cache_dir=cache_dir, eviction_policy="fifo")


def test_two_caches_share_layers_through_redis(cache_dir, tmp_path):
    """The cluster tier from Python: a second node gets the layer from Redis."""
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli, "LAYERCACHE_CLI is not set (run through ctest)")
    need(os.path.exists("/usr/bin/redis-server"),
         "redis-server is not installed (scripts/install-deps.sh installs it)")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    model = tmp_path / "model"
    model.mkdir()
    from safetensors_writer import write_model  # noqa: E402  (tests/ helper)
    tensors = write_model(model, layers=2)
    server = subprocess.Popen([cli, "serve", str(model), "--repo-id", "acme/tiny"], stdout=subprocess.PIPE,
                              text=True)
    try:
        endpoint = [server.stdout.readline(), server.stdout.readline()][1].split("=", 1)[1].strip()
        url = f"redis://127.0.0.1:{port}"
        for _ in range(2000):  # bounded wait for redis-server to listen
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
        a = LayerCache(cache_dir=str(tmp_path / "a"), remote=url)
        a.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint, quiet=True)
        a.flush()
        assert a.get_stats()["remote"]["remote_publishes"] == 1
        b = LayerCache(cache_dir=str(tmp_path / "b"), remote=[url])
        layer = b.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint, quiet=True)
        assert torch.equal(layer["self_attn.q_proj.weight"], tensors["model.layers.1.self_attn.q_proj.weight"])
        stats = b.get_stats()
        assert stats["remote"]["remote_hits"] == 1
        assert stats["performance"]["bytes_downloaded"] == 0
        with pytest.raises(ValueError):
            LayerCache(cache_dir=str(tmp_path / "c"), remote="rediss://127.0.0.1:1")
    finally:
        server.terminate()
        server.wait()
        redis.terminate()
        redis.wait()


@pytest.mark.parametrize("mode", ["auto", "buffered", "direct", "mapped"])
def test_every_disk_read_mode_serves_the_same_bytes(cache_dir, mode):
    state = {"w": torch.randn(2048, 2048), "b": torch.randn(64).to(torch.bfloat16)}  # 16 MiB: mappable
    LayerCache(cache_dir=cache_dir).cache_layer("m", 0, state)
    cache = LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0, disk_read_mode=mode)
    layer = cache.get_layer("m", 0)
    assert torch.equal(layer["w"], state["w"]) and torch.equal(layer["b"], state["b"])
    with pytest.raises(ValueError):
        LayerCache(cache_dir=cache_dir, disk_read_mode="fast")
