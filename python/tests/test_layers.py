"""Callable layers in any process, per-key skeletons, the revision rule, streaming inference.
Each check that matters runs in a fresh /usr/bin/python3 (or test-venv) process."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import layercache
from layercache import models
from layercache.sli import StreamingModel

import synthetic_models as sm
from needs import need

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_PY = os.path.dirname(os.path.dirname(layercache.__file__))


def run_fresh(code, python=sys.executable, env=None):
    """Runs `code` in a new interpreter that imports the same layercache; returns its stdout."""
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([BUILD_PY, HERE]), **(env or {}))
    r = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gpt2"])
def test_imported_layer_is_callable_in_a_new_process(tmp_path, family):
    ckpt = tmp_path / "ckpt"
    sm.write_model(str(ckpt), family, layers=3)
    cache_dir = str(tmp_path / "cache")
    assert layercache.LayerCache(cache_dir=cache_dir).import_checkpoint(str(ckpt), "m") == 4
    out = run_fresh(f"""
        import torch, layercache
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        layer = c.get_layer("m", 2)
        x = torch.randn(1, 5, 64).to(torch.bfloat16)
        y = layer(x)
        assert y.shape == x.shape and y.dtype == torch.bfloat16
        print(type(layer).__name__, bool(torch.isfinite(y.float()).all()))
    """)
    expected = {"llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "qwen2": "Qwen2DecoderLayer",
                "gpt2": "GPT2Block"}[family]
    assert out.split() == [expected, "True"]


def test_layers_equal_transformers_decoder_layers(tmp_path):
    """Each family's layer from a fresh process == transformers' class with the same weights."""
    py = os.environ.get("LAYERCACHE_TEST_PYTHON")
    need(py and os.access(py, os.X_OK),
         "no LAYERCACHE_TEST_PYTHON (the test venv with transformers: scripts/install-python-env.sh)")
    cache_dir = str(tmp_path / "cache")
    c = layercache.LayerCache(cache_dir=cache_dir)
    for family in ["llama", "mistral", "qwen2", "gpt2"]:
        sm.write_model(str(tmp_path / family), family, layers=3)
        c.import_checkpoint(str(tmp_path / family), family)
    # Mistral with a sliding window shorter than the test's 7 positions.
    sm.write_model(str(tmp_path / "mistral_sw"), "mistral", layers=3)
    cfg = json.load(open(tmp_path / "mistral_sw" / "config.json"))
    cfg["sliding_window"] = 3
    json.dump(cfg, open(tmp_path / "mistral_sw" / "config.json", "w"))
    c.import_checkpoint(str(tmp_path / "mistral_sw"), "mistral_sw")
    models_ = ["llama", "mistral", "mistral_sw", "qwen2", "gpt2"]
    out = run_fresh(open(os.path.join(HERE, "transformers_equivalence.py")).read().replace(
        "if __name__ == \"__main__\":\n    main()", f"sys.argv = ['x', {cache_dir!r}, *{models_!r}]\nmain()"),
        python=py)
    assert out.count("(ok)") == 3 * len(models_), out


def test_module_spec_rebuilds_allow_listed_classes_only(tmp_path):
    cache_dir = str(tmp_path / "cache")
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("mix", 0, torch.nn.Linear(16, 16))
    c.cache_layer("mix", 1, torch.nn.Linear(32, 16))       # another shape under the same model
    c.cache_layer("mix", 2, {"w": torch.ones(3)})           # a dict
    c.cache_layer("mix", 3, torch.nn.LayerNorm(8))          # another class
    c.cache_layer("mix", 0, torch.nn.Linear(16, 4), quantization_mode="q")  # same layer, other mode
    # A user class, recorded by spec but not allow-listed: tensors only, nothing imported.
    c.cache_layer("mix", 4, {"weight": torch.ones(2, 2), "bias": torch.zeros(2)},
                  module_spec={"class": "os.system", "kwargs": {"command": "touch " + str(tmp_path / "pwned")}})
    out = run_fresh(f"""
        import layercache, torch
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        for i in range(5):
            l = c.get_layer("mix", i)
            print(type(l).__name__, tuple(l.weight.shape) if hasattr(l, "weight") else sorted(l))
        print(tuple(c.get_layer("mix", 0, quantization_mode="q").weight.shape))
    """)
    assert out.splitlines() == ["Linear (16, 16)", "Linear (16, 32)", "LayerTensors ['w']", "LayerNorm (8,)",
                                "LayerTensors ['bias', 'weight']", "(4, 16)"]
    assert not (tmp_path / "pwned").exists()


class Scaled(torch.nn.Module):
    def __init__(self, n, factor):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.factor = factor

    def forward(self, x):
        return x * self.weight * self.factor

    def __layercache_spec__(self):
        return {"class": "test_layers.Scaled", "kwargs": {"n": self.weight.shape[0], "factor": self.factor}}


def test_user_module_by_spec_when_allowed(tmp_path):
    cache_dir = str(tmp_path / "cache")
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("u", 0, Scaled(4, 3.0))
    code = f"""
        import layercache, torch, layercache.modules as lm
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        print(type(c.get_layer("u", 0)).__name__)
        lm.allow_module_class("test_layers.Scaled")
        l = c.get_layer("u", 0)
        print(type(l).__name__, l(torch.ones(4)).tolist())
    """
    assert run_fresh(code).splitlines() == ["LayerTensors", "Scaled [3.0, 3.0, 3.0, 3.0]"]


def test_factory(cache_dir):
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("f", 0, {"weight": torch.ones(2, 3)})
    c.register_module_factory("f", lambda i: torch.nn.Linear(3, 2, bias=False))
    l = c.get_layer("f", 0)
    assert isinstance(l, torch.nn.Linear) and l(torch.ones(3)).tolist() == [3.0, 3.0]


def test_streamed_forward_equals_resident_and_greedy_tokens(tmp_path):
    for family in ["llama", "gpt2"]:
        sm.write_model(str(tmp_path / family), family, layers=6, hidden=64)
        # A memory tier far smaller than the model: layers stream from disk.
        c = layercache.LayerCache(cache_dir=str(tmp_path / ("cache-" + family)), max_memory_cache_size_gb=60e3 / 2**30)
        c.import_checkpoint(str(tmp_path / family), family)
        ids = torch.tensor([[3, 1, 4, 1, 5]])
        streamed = StreamingModel(c, family)
        before = c.get_stats()["performance"]["disk_hits"]
        a = streamed(ids)
        assert c.get_stats()["performance"]["disk_hits"] > before  # it did stream
        resident = StreamingModel(c, family, resident=True)
        assert torch.equal(a, resident(ids))
        # The same forward with every layer built by hand from the checkpoint's tensors.
        tensors = {k: v for k, v in c.get_layer(family, 0, quantization_mode="non-layer").items()}
        manual = [c.get_layer(family, i) for i in range(6)]
        assert all(isinstance(m, models.LlamaDecoderLayer if family == "llama" else models.GPT2Block) for m in manual)
        assert streamed.generate(ids, 6).tolist() == resident.generate(ids, 6).tolist()
        assert tensors


def test_download_then_get_in_a_new_process_online_and_offline(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli and os.access(cli, os.X_OK), "LAYERCACHE_CLI (the layercache binary) is not set")
    repo = tmp_path / "repo"
    sm.write_model(str(repo), "qwen2", layers=3)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([cli, "serve", str(repo), "--repo-id", "org/tiny", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)  # waiting for the server to listen, not synchronising the test
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
        cache_dir = str(tmp_path / "cache")
        out = run_fresh(f"""
            import layercache
            c = layercache.LayerCache(cache_dir={cache_dir!r})
            l = c.download_and_cache("tiny", 1, "org/tiny")
            print(type(l).__name__, type(c.get_layer("tiny", 1)).__name__, c.default_revision("tiny") is not None)
        """, env=env)
        assert out.split() == ["Qwen2DecoderLayer", "Qwen2DecoderLayer", "True"]
        for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
            out = run_fresh(f"""
                import layercache, torch
                c = layercache.LayerCache(cache_dir={cache_dir!r})
                l = c.get_layer("tiny", 1)
                y = l(torch.randn(1, 3, 64).to(torch.bfloat16))
                s = c.get_stats()["performance"]
                print(type(l).__name__, s["total_hits"], s["total_misses"])
            """, env=dict(env, **extra))
            assert out.split() == ["Qwen2DecoderLayer", "1", "0"], extra
    finally:
        server.terminate()
        server.wait(timeout=10)
    # Offline, without a server: the same.
    out = run_fresh(f"""
        import layercache
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        print(type(c.download_and_cache("tiny", 1, "org/tiny", offline=True)).__name__,
              type(c.get_layer("tiny", 2)).__name__)
    """, env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert out.split() == ["Qwen2DecoderLayer", "NoneType"]


def test_hit_reuses_objects_until_changed_in_place(cache_dir):
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("h", 0, {"w": torch.ones(4)})
    a = c.get_layer("h", 0)
    assert c.get_layer("h", 0) is a
    a["w"].add_(1)  # the caller changed what it got: the next hit builds new objects
    b = c.get_layer("h", 0)
    assert b is not a
    c.cache_layer("h", 0, {"w": torch.zeros(4)})  # new bytes: new objects
    assert c.get_layer("h", 0)["w"].tolist() == [0.0] * 4


def test_options_are_one_bound_class():
    o = layercache.make_options(cache_dir="/tmp/x", remote_chunk_mb=4, remote_ttl_s=9, disk_read_mode="mapped")
    assert (o.remote_chunk_mb, o.remote_ttl_s, o.disk_read_mode) == (4, 9, "mapped")
    with pytest.raises(TypeError):
        layercache.make_options(no_such_option=1)
    with pytest.raises(ValueError):
        layercache.make_options(disk_read_mode="sideways")


def test_every_cpp_option_is_a_keyword(cache_dir):
    """Each field of the bound C++ LayerCacheOptions is a LayerCache keyword under its own name."""
    fields = {n for n in dir(layercache._core.Options()) if not n.startswith("_") and n != "validate"}
    assert {"max_gpu_cache_size_gb", "pin_memory_layers", "prefetch_threads", "worker_threads"} <= fields
    for name in fields:
        value = getattr(layercache._core.Options(), name)
        assert getattr(layercache.make_options(**{name: value}), name) == value, name
    o = layercache.make_options(max_gpu_cache_size_gb=1.5, pin_memory_layers=True)
    assert (o.max_gpu_cache_size_gb, o.pin_memory_layers) == (1.5, True)
    c = layercache.LayerCache(cache_dir=cache_dir, max_gpu_cache_size_gb=0.5, pin_memory_layers=True)
    assert c.get_layer("none", 0) is None
    with pytest.raises(ValueError, match="max_gpu_cache_size_gb"):
        layercache.LayerCache(cache_dir=cache_dir, max_gpu_cache_size_gb=-1)
    with pytest.raises(ValueError, match="worker_threads"):
        layercache.LayerCache(cache_dir=cache_dir, worker_threads=-1)
    small = layercache.LayerCache(cache_dir=cache_dir, worker_threads=1, prefetch_threads=2)
    small.cache_layer("one-worker", 0, torch.nn.Linear(4, 4))
    assert isinstance(small.get_layer("one-worker", 0), torch.nn.Linear)


def test_io_optimizer(cache_dir):
    from nexus_final.sli.io_optimizer import IOOptimizer
    c = layercache.LayerCache(cache_dir=cache_dir)
    for i in range(4):
        c.cache_layer("io", i, torch.nn.Linear(4, 4))
    opt = IOOptimizer(c)
    assert isinstance(opt.get_layer_with_prefetch("io", 1, 4), torch.nn.Linear)
    with pytest.raises(ValueError):
        opt.get_layer_with_prefetch("io", 4, 4)


def test_cli_fetch_then_get_and_ls_revision(tmp_path):
    """`layercache fetch REPO --model-id m` then `layercache get m 1` hits (the default revision's
    commit), `--revision` picks a commit, and `ls` shows it."""
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli and os.access(cli, os.X_OK), "LAYERCACHE_CLI (the layercache binary) is not set")
    sm.write_model(str(tmp_path / "repo"), "qwen2", layers=2)
    server = subprocess.Popen([cli, "serve", str(tmp_path / "repo"), "--repo-id", "org/tiny"],
                              stdout=subprocess.PIPE, text=True)
    try:
        endpoint = [server.stdout.readline(), server.stdout.readline()][1].split("=", 1)[1].strip()
        env = dict(os.environ, HF_ENDPOINT=endpoint)
        c = ["--cache-dir", str(tmp_path / "cache")]
        run = lambda *a: subprocess.run([cli, *c, *a], capture_output=True, text=True, env=env, timeout=120)
        assert run("fetch", "org/tiny", "--model-id", "m").returncode == 0
        entries = json.loads(run("ls", "--json").stdout)
        commit = entries[0]["revision"]
        assert len(commit) == 40 and all(e["revision"] == commit for e in entries)
        assert "REVISION" in run("ls").stdout and commit[:12] in run("ls").stdout
        assert run("get", "m", "1", "-o", str(tmp_path / "a.st")).returncode == 0
        assert run("get", "m", "1", "--revision", commit, "-o", str(tmp_path / "b.st")).returncode == 0
        assert open(tmp_path / "a.st", "rb").read() == open(tmp_path / "b.st", "rb").read()
        miss = run("get", "m", "1", "--revision", "0" * 40, "-o", str(tmp_path / "c.st"))
        assert miss.returncode == 1 and "not cached" in miss.stderr
        assert run("invalidate", "m", "--layer", "1", "--revision", commit[:8]).returncode == 0
        assert run("get", "m", "1", "-o", str(tmp_path / "d.st")).returncode == 1
        assert run("get", "m", "0", "-o", str(tmp_path / "e.st")).returncode == 0
        assert run("invalidate", "m", "--revision", "abc").returncode == 2
    finally:
        server.terminate()
        server.wait()


def test_invalidate_one_revision(cache_dir):
    c = layercache.LayerCache(cache_dir=cache_dir)
    a, b = "a" * 40, "b" * 40
    c.cache_layer("r", 0, {"w": torch.ones(2)}, revision=a)
    c.cache_layer("r", 0, {"w": torch.zeros(2)}, revision=b)
    assert c.get_layer("r", 0, revision=a)["w"].tolist() == [1.0, 1.0]
    assert c.invalidate_cache("r", revision=a[:7]) == 1
    assert c.get_layer("r", 0, revision=a) is None
    assert c.get_layer("r", 0, revision=b)["w"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        c.invalidate_cache("r", revision="ab")


def test_a_dropped_cache_is_freed_and_its_layers_stay_usable(cache_dir):
    import gc
    import weakref
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("m", 0, {"w": torch.ones(3)})
    got = c.get_layer("m", 0)
    assert c.get_layer("m", 0) is got
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None  # the C++ side holds nothing that keeps the Python object alive
    assert got["w"].tolist() == [1.0, 1.0, 1.0]
    assert layercache.LayerCache(cache_dir=cache_dir).get_layer("m", 0)["w"].tolist() == [1.0, 1.0, 1.0]


def test_import_checkpoint_under_a_revision(tmp_path):
    """import_checkpoint(revision=commit): the entries carry that commit, it becomes the model's default
    revision, and a new process finds the layers (callable, with the config) without naming it."""
    sm.write_model(str(tmp_path / "ckpt"), "llama", layers=2)
    cache_dir = str(tmp_path / "cache")
    commit = "0123456789abcdef0123456789abcdef01234567"
    c = layercache.LayerCache(cache_dir=cache_dir)
    assert c.import_checkpoint(tmp_path / "ckpt", "m", revision=commit, layers=[0, 1], include_non_layer=False) == 2
    assert c.default_revision("m") == commit
    with pytest.raises(ValueError):
        c.import_checkpoint(tmp_path / "ckpt", "bad", revision=5)
    with pytest.raises(ValueError, match="NUL"):
        c.import_checkpoint(tmp_path / "ckpt", "bad", revision="abc\0def")
    assert c.default_revision("bad") is None and c.get_layer("bad", 0) is None
    code = f"""
        import layercache, torch
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        a = c.get_layer("m", 1)
        b = c.get_layer("m", 1, revision={commit!r})
        assert isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module), (type(a), type(b))
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        print(type(a).__name__, a(torch.randn(1, 3, 64, dtype=torch.bfloat16)).shape[-1],
              c.get_layer("m", 1, revision="f" * 40) is None, c.model_config("m")["model_type"])
        print(c.invalidate_cache("m", revision={commit[:7]!r}), c.get_layer("m", 0))
    """
    out = run_fresh(code)
    assert out.split() == ["LlamaDecoderLayer", "64", "True", "llama", "2", "None"], out


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gpt2"])
def test_padding_mask_and_position_ids(tmp_path, family):
    """In a fresh process (any torch): a left-padded batch with its padding mask and position ids gives,
    at the tokens, what each sequence gives alone; explicit positions 0..seq-1 and the complete 4-D
    mask give what the defaults give; a key/value cache or a mask of the wrong shape is a ValueError.
    Tolerance: bf16, atol/rtol 2e-2 (a padded batch runs other matmul shapes)."""
    sm.write_model(str(tmp_path / "ckpt"), family, layers=2)
    cache_dir = str(tmp_path / "cache")
    layercache.LayerCache(cache_dir=cache_dir).import_checkpoint(tmp_path / "ckpt", "m")
    out = run_fresh(f"""
        import torch, layercache
        layer = layercache.LayerCache(cache_dir={cache_dir!r}).get_layer("m", 1)
        torch.manual_seed(0)
        a = torch.randn(1, 6, 64).to(torch.bfloat16)
        b = torch.randn(1, 4, 64).to(torch.bfloat16)
        x = torch.cat([a, torch.cat([torch.randn(1, 2, 64).to(torch.bfloat16), b], 1)])
        padding = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
        pos = (padding.cumsum(-1) - 1).clamp(min=0)
        close = lambda p, q: torch.allclose(p.float(), q.float(), atol=2e-2, rtol=2e-2)
        with torch.no_grad():
            both = layer(x, attention_mask=padding, position_ids=pos)
            alone_a, alone_b = layer(a), layer(b)
            print(close(both[0], alone_a[0]), close(both[1, 2:], alone_b[0]))
            print(torch.equal(layer(a, position_ids=torch.arange(6)[None]), alone_a),
                  torch.equal(layer(a, attention_mask=torch.ones(1, 6, dtype=torch.long)), alone_a))
            allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None, None] & padding.bool()[:, None, None, :]
            print(close(layer(x, attention_mask=allowed, position_ids=pos)[1, 2:], alone_b[0]))
            shifted = layer(b, position_ids=torch.arange(4)[None] + 3)
            print({family!r} == "gpt2" or not torch.equal(shifted, alone_b))  # RoPE sees the positions
        for bad in (dict(past_key_value=object()), dict(attention_mask=torch.ones(2, 5))):
            try:
                layer(x, **bad)
                print("accepted", list(bad))
            except ValueError:
                print("ValueError")
    """)
    assert out.split() == ["True"] * 6 + ["ValueError"] * 2, out
