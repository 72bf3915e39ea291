"""Writes to returned tensors (in-place torch ops, copy_, numpy writes, a module's parameters) never
reach the cached bytes, another holder, another process or a later get_layer, and never crash; in
every disk read mode and tier (memory, disk, Redis)."""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import layercache
from needs import need

BUILD_PY = os.path.dirname(os.path.dirname(layercache.__file__))
HERE = os.path.dirname(os.path.abspath(__file__))


def state():
    g = torch.Generator().manual_seed(3)
    # 16 MiB + : the mapped read mode maps it.
    return {"w": torch.randn(2048, 2048, generator=g), "b": torch.randn(64, generator=g).to(torch.bfloat16)}


def scribble(layer):
    """Every kind of write a caller may make to what it got."""
    if isinstance(layer, torch.nn.Module):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(1)
        return
    layer["w"].add_(1)
    layer["w"][0].copy_(torch.zeros(2048))
    layer["b"].mul_(3)
    layer["w"].numpy()[5, 5] = 1234.0


def check_pristine(layer, expected):
    if isinstance(layer, torch.nn.Module):
        assert torch.equal(layer.weight, expected["weight"])
        return
    assert torch.equal(layer["w"], expected["w"]) and torch.equal(layer["b"], expected["b"])


@pytest.mark.parametrize("mode", ["auto", "buffered", "direct", "mapped"])
def test_writes_stay_with_the_caller_in_every_mode(tmp_path, mode):
    cache_dir = str(tmp_path / "cache")
    expected = state()
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("m", 0, expected)
    lin = torch.nn.Linear(2048, 2048, bias=False)  # 16 MiB: mapped
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("m", 1, lin)
    code = f"""
        import sys, torch, layercache
        sys.path.insert(0, {HERE!r})
        from test_writes import state, scribble, check_pristine
        expected = state()
        weight = torch.load({str(tmp_path / "lin.pt")!r})
        for budget in (0, 2):  # disk tier every time, then memory tier hits
            c = layercache.LayerCache(cache_dir={cache_dir!r}, disk_read_mode={mode!r}, max_memory_cache_size_gb=budget)
            for key, exp in ((0, expected), (1, {{"weight": weight}})):
                first = c.get_layer("m", key)
                held = first if key == 0 else first._layercache_tensors
                assert held.copy_on_write, "a layer of 16 MiB and more is a copy-on-write mapping"
                other = c.get_layer("m", key)    # another holder (the same objects on a memory hit)
                scribble(first)
                again = c.get_layer("m", key)    # after in-place changes: pristine objects
                check_pristine(again, exp)
                scribble(again)
                check_pristine(c.get_layer("m", key), exp)
        assert c.verify_cache_integrity() == []
        print("ok")
    """
    torch.save(lin.weight.detach().clone(), str(tmp_path / "lin.pt"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BUILD_PY, HERE]))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
    # Another process afterwards: the cache is unchanged.
    c = layercache.LayerCache(cache_dir=cache_dir, disk_read_mode=mode)
    check_pristine(c.get_layer("m", 0), expected)
    assert c.verify_cache_integrity() == []


def test_numpy_writes_into_held_objects_are_the_holders(cache_dir):
    """The contract: numpy writes bump no torch version counter, so objects you changed that way
    are yours; they still never reach the cache (another LayerCache, a new process)."""
    expected = state()
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("m", 0, expected)
    got = c.get_layer("m", 0)
    got["w"].numpy()[0, 0] = 7.0
    fresh = layercache.LayerCache(cache_dir=cache_dir, max_memory_cache_size_gb=0).get_layer("m", 0)
    assert torch.equal(fresh["w"], expected["w"])


def test_writes_through_the_redis_tier(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli, "LAYERCACHE_CLI is not set (run through ctest)")
    need(os.path.exists("/usr/bin/redis-server"), "redis-server is not installed (scripts/install-deps.sh)")
    import synthetic_models as sm
    sm.write_model(str(tmp_path / "model"), "qwen2", layers=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    server = subprocess.Popen([cli, "serve", str(tmp_path / "model"), "--repo-id", "acme/tiny"],
                              stdout=subprocess.PIPE, text=True)
    try:
        endpoint = [server.stdout.readline(), server.stdout.readline()][1].split("=", 1)[1].strip()
        for _ in range(20000):  # bounded wait for redis-server to listen
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
        url = f"redis://127.0.0.1:{port}"
        a = layercache.LayerCache(cache_dir=str(tmp_path / "a"), remote=url)
        expected = {k: v.clone() for k, v in a.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint,
                                                                  quiet=True).state_dict().items()}
        a.flush()
        b = layercache.LayerCache(cache_dir=str(tmp_path / "b"), remote=url, max_memory_cache_size_gb=0)
        got = b.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint, quiet=True)
        assert b.get_stats()["remote"]["remote_hits"] == 1
        scribble(got)
        for cache in (b, layercache.LayerCache(cache_dir=str(tmp_path / "c"), remote=url)):
            again = cache.download_and_cache("tiny", 1, "acme/tiny", endpoint=endpoint, quiet=True)
            assert all(torch.equal(v, expected[k]) for k, v in again.state_dict().items())
    finally:
        server.terminate()
        server.wait()
        redis.terminate()
        redis.wait()


def run_fresh(code, **env_extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BUILD_PY, HERE]), **env_extra)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


def test_another_holder_of_the_same_cached_layer_never_sees_numpy_writes(cache_dir):
    expected = state()
    c = layercache.LayerCache(cache_dir=cache_dir)
    c.cache_layer("m", 0, expected)
    mine = c.get_layer("m", 0)
    theirs = c.prefetch("m", [0])[0].result()  # a second build over the same cached bytes
    assert mine is not theirs and mine.copy_on_write and theirs.copy_on_write
    mine["w"].numpy()[:] = 0  # no version bump: these objects stay as they are, and are the caller's
    assert torch.equal(theirs["w"], expected["w"])
    assert torch.equal(c.prefetch("m", [0])[0].result()["w"], expected["w"])
    assert c.verify_cache_integrity() == []


def test_layers_under_16_mib_are_copied_and_the_switches_work(cache_dir):
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("m", 0, {"w": torch.ones(100, 100)})  # 40 KB
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("m", 1, state())
    layercache.LayerCache(cache_dir=cache_dir).cache_layer("m", 2, {"w": torch.ones(1024, 1024)})  # 4 MiB
    run_fresh(f"""
        import layercache, torch
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        small, large, medium = c.get_layer("m", 0), c.get_layer("m", 1), c.get_layer("m", 2)
        assert not small.copy_on_write and large.copy_on_write and not medium.copy_on_write
        small["w"].numpy()[:] = 5
        medium["w"].numpy()[:] = 5
        assert torch.equal(c.prefetch("m", [0])[0].result()["w"], torch.ones(100, 100))
        assert torch.equal(c.prefetch("m", [2])[0].result()["w"], torch.ones(1024, 1024))
        print("ok")
    """)
    run_fresh(f"""
        import layercache, torch
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        medium = c.get_layer("m", 2)
        assert medium.copy_on_write  # LAYERCACHE_COPY_ON_WRITE_MIN_MB=1
        medium["w"].numpy()[:] = 5
        assert torch.equal(c.prefetch("m", [2])[0].result()["w"], torch.ones(1024, 1024))
        print("ok")
    """, LAYERCACHE_COPY_ON_WRITE_MIN_MB="1")
    run_fresh(f"""
        import layercache, torch
        c = layercache.LayerCache(cache_dir={cache_dir!r})
        got = c.get_layer("m", 1)
        assert not got.copy_on_write  # LAYERCACHE_COPY_ON_WRITE=0: a private copy
        got["w"].add_(1)
        assert not torch.equal(c.get_layer("m", 1)["w"], got["w"])
        print("ok")
    """, LAYERCACHE_COPY_ON_WRITE="0")


def test_forked_children_and_their_parent_keep_what_they_hold(cache_dir):
    """After os.fork() parent and child share the cache's memory file: neither one's writes, releases or
    new layers reach what the other holds."""
    expected = state()
    c = layercache.LayerCache(cache_dir=cache_dir)
    for i in range(4):
        c.cache_layer("m", i, expected)
    run_fresh(f"""
        import os, sys, torch, layercache
        from test_writes import state, scribble, check_pristine
        expected = state()
        c = layercache.LayerCache(cache_dir={cache_dir!r}, max_memory_cache_size_gb=0.02)  # one layer fits
        held = c.get_layer("m", 0)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child writes to what it inherited, drops it and loads other layers
            ok = True
            try:
                held["w"].numpy()[:] = -1
                scribble(held)
                del held
                for i in (1, 2, 3, 1, 2, 3):
                    check_pristine(c.get_layer("m", i), expected)
                os.write(w, b"x")
            except BaseException as e:
                print(repr(e), file=sys.stderr)
                ok = False
            os._exit(0 if ok else 1)
        assert os.read(r, 1) == b"x"
        check_pristine(held, expected)
        for i in (1, 2, 3, 0):  # the parent moves on too; its earlier objects are unchanged
            check_pristine(c.get_layer("m", i), expected)
        check_pristine(held, expected)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        print("ok")
    """)


def test_writes_to_layers_of_a_compressed_cache(cache_dir):
    """Compressed entries are decompressed into the memory file: mapped copy-on-write like the rest."""
    expected = state()
    layercache.LayerCache(cache_dir=cache_dir, enable_compression=True).cache_layer("m", 0, expected)
    run_fresh(f"""
        import torch, layercache
        from test_writes import state, scribble, check_pristine
        expected = state()
        for budget in (0, 2):
            c = layercache.LayerCache(cache_dir={cache_dir!r}, enable_compression=True, max_memory_cache_size_gb=budget)
            first = c.get_layer("m", 0)
            assert first.copy_on_write
            scribble(first)
            check_pristine(c.get_layer("m", 0), expected)
        assert c.verify_cache_integrity() == []
        print("ok")
    """)
