"""Metrics a Prometheus can scrape, parsed by the real Prometheus text parser,
and lifetime counters that outlive the process."""
import os
import subprocess

import numpy as np

from needs import need, need_module

import layercache

parser = need_module("prometheus_client.parser",
                     "prometheus_client is not installed; scripts/install-deps.sh installs "
                     "python3-prometheus-client")


def families(text):
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(fams, family, sample, **labels):
    for s in fams[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, sample, labels))


def test_metrics_text_parses_and_counts(tmp_path):
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"), max_memory_cache_size_gb=0)
    assert cache.cache_layer("m", 0, {"w": np.arange(1000, dtype=np.float32)})
    assert cache.get_layer("m", 0) is not None   # a disk hit (no memory tier)
    assert cache.get_layer("m", 1) is None       # a miss
    fams = families(cache.metrics_text())
    assert value(fams, "layercache_hits", "layercache_hits_total", tier="disk") == 1
    assert value(fams, "layercache_misses", "layercache_misses_total") == 1
    assert value(fams, "layercache_get_duration_seconds", "layercache_get_duration_seconds_count",
                 tier="disk") == 1
    assert value(fams, "layercache_get_duration_seconds", "layercache_get_duration_seconds_bucket",
                 tier="disk", le="+Inf") == 1
    assert value(fams, "layercache_put_duration_seconds", "layercache_put_duration_seconds_count",
                 tier="disk") == 1
    assert fams["layercache_get_duration_seconds"].type == "histogram"
    assert value(fams, "layercache_info", "layercache_info", version=layercache.__version__) == 1


def test_lifetime_counters_add_up_over_processes(tmp_path):
    d = str(tmp_path / "c")
    first = layercache.LayerCache(cache_dir=d)
    first.cache_layer("m", 0, {"w": np.zeros(10, dtype=np.float32)})
    first.get_layer("m", 0)
    first.get_stats()  # flushes this process's counters (as closing the cache does)
    del first
    second = layercache.LayerCache(cache_dir=d)
    second.get_layer("m", 0)
    second.get_layer("m", 9)
    stats = second.get_stats()
    assert stats["performance"]["total_hits"] == 1      # this process
    assert stats["lifetime"]["memory_hits"] + stats["lifetime"]["disk_hits"] == 2
    assert stats["lifetime"]["misses"] == 1
    assert stats["lifetime"]["layers_cached"] == 1
    fams = families(second.metrics_text())
    hits = sum(value(fams, "layercache_lifetime_hits", "layercache_lifetime_hits_total", tier=t)
               for t in ("memory", "disk", "remote"))
    assert hits == 2


def test_cli_stats_prometheus_and_lifetime(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli, "LAYERCACHE_CLI is not set (run through ctest)")
    d = str(tmp_path / "c")
    cache = layercache.LayerCache(cache_dir=d)
    cache.cache_layer("m", 0, {"w": np.zeros(10, dtype=np.float32)})
    cache.get_layer("m", 0)
    cache.get_stats()
    del cache
    out = subprocess.run([cli, "stats", "--format", "prometheus", "--cache-dir", d],
                         capture_output=True, text=True, check=True).stdout
    fams = families(out)
    assert value(fams, "layercache_hits", "layercache_hits_total", tier="memory") == 0
    assert value(fams, "layercache_lifetime_hits", "layercache_lifetime_hits_total", tier="memory") == 1
    assert value(fams, "layercache_entries", "layercache_entries", tier="disk") == 1
