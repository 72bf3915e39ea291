"""The Hugging Face cache as a source: `layercache serve --hf-cache` and
`layercache import --hf-cache`, with a cache written by huggingface_hub itself."""
import json
import os
import shutil
import subprocess

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from conftest import CLI, Mirror, files_of


@pytest.fixture(scope="module")
def hf_cache(mirror, models, tmp_path_factory):
    """A cache holding org/tiny at two commits (main, and tag-like ref v1) and org/sharded."""
    root = tmp_path_factory.mktemp("hfcache")
    cache = root / "hub"
    old = mirror.commit()
    snapshot_download("org/tiny", endpoint=mirror.endpoint, cache_dir=cache)
    snapshot_download("org/sharded", endpoint=mirror.endpoint, cache_dir=cache)
    # A newer commit of org/tiny from another mirror: a changed README.
    newer = root / "tiny2"
    shutil.copytree(models["org/tiny"], newer)
    (newer / "README.md").write_text("# tiny, second commit\n")
    m2 = Mirror(["--repo", f"org/tiny={newer}"], root / "log2")
    try:
        snapshot_download("org/tiny", endpoint=m2.endpoint, cache_dir=cache)
        new = m2.commit()
    finally:
        m2.stop()
    assert new != old
    # huggingface_hub writes refs/<name> for a named revision.
    (cache / "models--org--tiny" / "refs" / "v1").write_text(old)
    (cache / "models--org--tiny" / "refs" / "refs" / "pr").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "refs" / "pr" / "1").write_text(old)
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == new
    return {"dir": cache, "old": old, "new": new, "newer_dir": newer}


@pytest.fixture(scope="module")
def cache_mirror(hf_cache, tmp_path_factory):
    m = Mirror(["--hf-cache", str(hf_cache["dir"])], tmp_path_factory.mktemp("log") / "access.log")
    yield m
    m.stop()


def test_serve_keeps_the_caches_commits(cache_mirror, hf_cache):
    assert cache_mirror.revisions["org/tiny"] == {"main": hf_cache["new"], "v1": hf_cache["old"],
                                                  "refs/pr/1": hf_cache["old"]}
    assert set(cache_mirror.revisions) == {"org/tiny", "org/sharded"}


@pytest.mark.parametrize("rev,which", [("main", "new"), ("v1", "old"), (None, "new")])
def test_snapshot_download_from_a_served_cache(cache_mirror, hf_cache, models, rev, which, tmp_path):
    commit = hf_cache[which]
    kw = {} if rev is None else {"revision": rev}
    path = snapshot_download("org/tiny", endpoint=cache_mirror.endpoint, cache_dir=tmp_path, **kw)
    assert os.path.basename(path) == commit
    want = files_of(hf_cache["newer_dir"] if which == "new" else models["org/tiny"])
    assert files_of(path) == want
    by_commit = snapshot_download("org/tiny", revision=commit, endpoint=cache_mirror.endpoint,
                                  cache_dir=tmp_path / "c")
    assert files_of(by_commit) == want


def test_blob_ids_come_through_unchanged(cache_mirror, hf_cache, tmp_path):
    for name in ["model.safetensors", "config.json"]:
        path = hf_hub_download("org/tiny", name, endpoint=cache_mirror.endpoint, cache_dir=tmp_path)
        src = hf_cache["dir"] / "models--org--tiny" / "snapshots" / hf_cache["new"] / name
        assert os.path.basename(os.path.realpath(path)) == os.path.basename(os.path.realpath(src))


def test_sharded_metadata_and_listing_from_a_served_cache(cache_mirror, models):
    api = HfApi(endpoint=cache_mirror.endpoint)
    meta = api.get_safetensors_metadata("org/sharded")
    assert meta.sharded
    assert sorted(meta.files_metadata) == sorted(p.name for p in models["org/sharded"].glob("*.safetensors"))
    assert sorted(api.list_repo_files("org/sharded")) == sorted(files_of(models["org/sharded"]))


def _ls(cache_dir):
    out = subprocess.run([CLI, "--cache-dir", str(cache_dir), "ls", "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_our_fetch_against_a_served_cache(cache_mirror, hf_cache, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=cache_mirror.endpoint)
    out = subprocess.run([CLI, "--cache-dir", str(tmp_path / "lc"), "fetch", "org/sharded", "--quiet",
                          "--non-layer"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    entries = _ls(tmp_path / "lc")
    layers = sorted(e["layer_index"] for e in entries if e["quantization_mode"] is None)
    assert layers == [0, 1, 2]
    commit = cache_mirror.commit("org/sharded")
    assert {e["revision"] for e in entries} == {commit}


def test_import_from_the_cache_keys_by_commit(hf_cache, tmp_path):
    lc = tmp_path / "lc"
    out = subprocess.run([CLI, "--cache-dir", str(lc), "import", "--hf-cache", str(hf_cache["dir"]),
                          "--repo-id", "org/tiny"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert hf_cache["new"] in out.stdout
    entries = _ls(lc)
    assert {e["revision"] for e in entries} == {hf_cache["new"]}
    assert {e["model_id"] for e in entries} == {"org/tiny"}
    assert sorted(e["layer_index"] for e in entries if e["quantization_mode"] is None) == [0, 1, 2]
    # Another revision, found through HF_HUB_CACHE (--hf-cache without a value).
    env = dict(os.environ, HF_HUB_CACHE=str(hf_cache["dir"]))
    out = subprocess.run([CLI, "--cache-dir", str(tmp_path / "lc2"), "import", "--hf-cache",
                          "--repo-id", "org/tiny", "--revision", "v1", "--model-id", "tiny-v1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {e["revision"] for e in _ls(tmp_path / "lc2")} == {hf_cache["old"]}


def test_import_errors_say_what_exists(hf_cache, tmp_path):
    base = [CLI, "--cache-dir", str(tmp_path / "lc"), "import", "--hf-cache", str(hf_cache["dir"])]
    out = subprocess.run(base + ["--repo-id", "org/absent"], capture_output=True, text=True)
    assert out.returncode != 0 and "org/absent" in out.stderr
    out = subprocess.run(base + ["--repo-id", "org/tiny", "--revision", "nope"], capture_output=True, text=True)
    assert out.returncode != 0 and "nope" in out.stderr and "v1" in out.stderr
    out = subprocess.run(base + ["--repo-id", "../etc"], capture_output=True, text=True)
    assert out.returncode != 0 and "not a repository id" in out.stderr


def test_serve_one_repo_of_the_cache_found_through_hf_home(hf_cache, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(hf_cache["dir"], home / "hub")
    env = {"HF_HOME": str(home), "HF_HUB_CACHE": ""}
    m = Mirror(["--hf-cache", "--repo-id", "org/tiny"], tmp_path / "log", extra_env=env)
    try:
        assert set(m.revisions) == {"org/tiny"}
        api = HfApi(endpoint=m.endpoint)
        assert api.model_info("org/tiny").sha == hf_cache["new"]
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("org/sharded")
    finally:
        m.stop()


def test_links_out_of_the_repository_are_not_served(hf_cache, tmp_path):
    cache = tmp_path / "hub"
    shutil.copytree(hf_cache["dir"], cache, symlinks=True)
    snap = cache / "models--org--tiny" / "snapshots" / hf_cache["new"]
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the mirror\n")
    os.symlink(secret, snap / "leak.txt")
    m = Mirror(["--hf-cache", str(cache), "--repo-id", "org/tiny"], tmp_path / "log")
    try:
        api = HfApi(endpoint=m.endpoint)
        files = api.list_repo_files("org/tiny")
        assert "leak.txt" not in files and "config.json" in files
        assert not api.file_exists("org/tiny", "leak.txt")
    finally:
        m.stop()


def test_refs_api_lists_branches_and_pull_requests(cache_mirror, hf_cache):
    api = HfApi(endpoint=cache_mirror.endpoint)
    refs = api.list_repo_refs("org/tiny", include_pull_requests=True)
    assert sorted((b.name, b.ref, b.target_commit) for b in refs.branches) == [
        ("main", "refs/heads/main", hf_cache["new"]), ("v1", "refs/heads/v1", hf_cache["old"])]
    assert [(p.ref, p.target_commit) for p in refs.pull_requests] == [("refs/pr/1", hf_cache["old"])]
    assert api.list_repo_refs("org/tiny").pull_requests is None


def test_a_ref_with_slashes(cache_mirror, hf_cache, models, tmp_path):
    path = hf_hub_download("org/tiny", "README.md", revision="refs/pr/1",
                           endpoint=cache_mirror.endpoint, cache_dir=tmp_path)
    assert open(path, "rb").read() == (models["org/tiny"] / "README.md").read_bytes()
    assert HfApi(endpoint=cache_mirror.endpoint).model_info("org/tiny", revision="refs/pr/1").sha == hf_cache["old"]
    # Sent unencoded, as some clients do.
    import http.client
    conn = http.client.HTTPConnection(cache_mirror.host, cache_mirror.port, timeout=30)
    conn.request("GET", "/org/tiny/resolve/refs/pr/1/README.md")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == (models["org/tiny"] / "README.md").read_bytes()
    assert r.getheader("X-Repo-Commit") == hf_cache["old"]
    conn.request("GET", "/api/models/org/tiny/")  # trailing slash
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["sha"] == hf_cache["new"]
    conn.close()
