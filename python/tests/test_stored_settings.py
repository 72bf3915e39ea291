"""LayerCache(...) and the settings a cache stores (settings.json), as the CLI applies them:
arguments not passed are the cache's settings; passed ones are for this process only (recorded when
the call creates the cache). Each program runs in a fresh process, as a user's would."""
import json
import os
import subprocess
import sys
import textwrap

import layercache

from needs import need

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_PARENT = os.path.dirname(os.path.dirname(layercache.__file__))

# Prints the options the cache runs with.
SHOW = """
import json
def show(c):
    o = c._core.options()
    print(json.dumps([o.max_cache_size_gb, o.enable_compression, o.compression_level,
                      o.checksum_algorithm, o.eviction_policy]))
"""


def run_fresh(code, check=True):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, HERE]))
    r = subprocess.run([sys.executable, "-c", SHOW + textwrap.dedent(code)], capture_output=True,
                       text=True, env=e, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def shown(r):
    return json.loads(r.stdout.splitlines()[-1])


def test_a_new_cache_records_the_creators_arguments_and_defaults(tmp_path):
    d = str(tmp_path / "c")
    run_fresh(f"""
import layercache
layercache.LayerCache(cache_dir={d!r}, max_cache_size_gb=7.5, enable_compression=True,
                      compression_level=3, checksum_algorithm="sha256")
""")
    s = layercache._core.read_cache_settings(d)
    assert s == {"max_cache_size_gb": "7.5", "enable_compression": "true", "compression_level": "3",
                 "checksum_algorithm": "sha256", "eviction_policy": "scan-resistant"}, s
    d2 = str(tmp_path / "c2")
    assert shown(run_fresh(f"import layercache; show(layercache.LayerCache(cache_dir={d2!r}))")) == [
        50.0, False, 6, "xxh3-128", "scan-resistant"]
    assert float(layercache._core.read_cache_settings(d2)["max_cache_size_gb"]) == 50.0


def test_arguments_not_passed_are_the_caches_and_passed_ones_this_process_only(tmp_path):
    d = str(tmp_path / "c")
    run_fresh(f"""
import layercache
layercache.LayerCache(cache_dir={d!r}, max_cache_size_gb=7.5, enable_compression=True,
                      compression_level=3)
""")
    before = open(os.path.join(d, "settings.json")).read()
    # A later program with default arguments works with the cache's settings ...
    r = run_fresh(f"""
import numpy as np, layercache
c = layercache.LayerCache(cache_dir={d!r})
c.cache_layer("m", 0, {{"w": np.zeros(1 << 16, dtype=np.float32)}})
print(c.get_stats()["disk_cache_size_gb"] * (1 << 30))
show(c)
""")
    assert shown(r) == [7.5, True, 3, "xxh3-128", "scan-resistant"]
    # ... so its entry is stored compressed (256 KiB of zeros take a small fraction of that).
    assert float(r.stdout.splitlines()[0]) < (1 << 18) / 4
    # Arguments passed explicitly apply to that process only; the stored settings stay.
    r = run_fresh(f"""
import layercache
show(layercache.LayerCache(cache_dir={d!r}, max_cache_size_gb=1.0, compression_level=9,
                           eviction_policy="lru"))
""")
    assert shown(r) == [1.0, True, 9, "xxh3-128", "lru"]
    assert open(os.path.join(d, "settings.json")).read() == before
    # The process-wide cache follows the same rule.
    r = run_fresh(f"""
import layercache
show(layercache.get_layer_cache(cache_dir={d!r}, compression_level=1))
""")
    assert shown(r) == [7.5, True, 1, "xxh3-128", "scan-resistant"]


def test_cli_config_changes_what_the_next_program_uses(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli and os.access(cli, os.X_OK), "LAYERCACHE_CLI (the layercache binary) is not set")
    d = str(tmp_path / "c")
    run_fresh(f"import layercache; layercache.LayerCache(cache_dir={d!r})")
    r = subprocess.run([cli, "--cache-dir", d, "config", "--set", "max_cache_size_gb=3",
                        "--set", "eviction_policy=lru", "--set", "checksum_algorithm=md5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = run_fresh(f"import layercache; show(layercache.LayerCache(cache_dir={d!r}))")
    assert shown(r) == [3.0, False, 6, "md5", "lru"]


def test_a_cache_without_settings_gets_no_budget_by_default(tmp_path):
    # As in the CLI: a cache made before settings existed (entries, no settings.json) is not
    # evicted by a default budget nobody chose; a budget passed explicitly applies.
    d = str(tmp_path / "c")
    run_fresh(f"import layercache; layercache.LayerCache(cache_dir={d!r})")
    os.remove(os.path.join(d, "settings.json"))
    assert shown(run_fresh(f"import layercache; show(layercache.LayerCache(cache_dir={d!r}))"))[0] == 1048576.0
    r = run_fresh(f"import layercache; show(layercache.LayerCache(cache_dir={d!r}, max_cache_size_gb=2))")
    assert shown(r)[0] == 2.0


def test_unreadable_stored_settings_are_an_error(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "settings.json").write_text("{not json")
    r = run_fresh(f"import layercache; layercache.LayerCache(cache_dir={str(d)!r})", check=False)
    assert r.returncode != 0 and "settings.json" in r.stderr, r.stderr[-2000:]
