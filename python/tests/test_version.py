"""The package's version is the library's (CMake project version)."""
import json
import os
import re
import subprocess

import layercache


def test_version_matches_the_library_and_the_cli(tmp_path):
    assert re.fullmatch(r"\d+\.\d+\.\d+", layercache.__version__)
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    assert json.loads(cache._core.stats_json())["version"] == layercache.__version__
    cli = os.environ.get("LAYERCACHE_CLI")
    if cli:
        out = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "layercache " + layercache.__version__
