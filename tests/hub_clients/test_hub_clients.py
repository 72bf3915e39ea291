"""The official Python Hub clients (huggingface_hub, transformers) against
`layercache serve` on loopback."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import (EntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from conftest import CLI, files_of


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_hf_hub_download_lays_out_the_cache_as_from_the_hub(mirror, models, tmp_path):
    cache = tmp_path / "hub"
    src = models["org/tiny"]
    for name in ["config.json", "model.safetensors", "docs/100%.txt", "docs/deep/a b.txt"]:
        path = hf_hub_download("org/tiny", name, endpoint=mirror.endpoint, cache_dir=cache)
        data = open(path, "rb").read()
        assert data == (src / name).read_bytes(), name
        # The blob is named by the ETag: sha256 for LFS files, git blob id otherwise.
        blob = os.path.basename(os.path.realpath(path))
        want = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else git_blob_id(data)
        assert blob == want, name
        assert f"snapshots/{mirror.commit()}/" in path
    ref = cache / "models--org--tiny" / "refs" / "main"
    assert ref.read_text() == mirror.commit()


def test_snapshot_download_by_branch_and_by_commit(mirror, models, tmp_path):
    for rev in ["main", mirror.commit()]:
        path = snapshot_download("org/tiny", revision=rev, endpoint=mirror.endpoint,
                                 cache_dir=tmp_path / rev)
        assert files_of(path) == files_of(models["org/tiny"])
        assert os.path.basename(path) == mirror.commit()


def test_repo_id_without_org(mirror, models, tmp_path):
    path = snapshot_download("single", endpoint=mirror.endpoint, cache_dir=tmp_path)
    assert files_of(path) == files_of(models["org/tiny"])


def _inspect(path):
    out = subprocess.run([CLI, "inspect", "--json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("repo", ["org/tiny", "org/sharded"])
def test_get_safetensors_metadata_matches_layercache_inspect(mirror, models, repo):
    meta = HfApi(endpoint=mirror.endpoint).get_safetensors_metadata(repo)
    src = models[repo]
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert sorted(meta.files_metadata) == shards
    assert meta.sharded == (len(shards) > 1)
    for shard in shards:
        want = _inspect(src / shard)
        got = meta.files_metadata[shard]
        assert got.metadata == want["metadata"]
        assert sorted(got.tensors) == sorted(t["name"] for t in want["tensors"])
        for t in want["tensors"]:
            info = got.tensors[t["name"]]
            assert info.dtype == t["dtype"]
            assert info.shape == t["shape"]
            assert info.data_offsets == tuple(t["data_offsets"])
        for name in got.tensors:
            assert meta.weight_map[name] == shard


def test_model_info(mirror, models):
    api = HfApi(endpoint=mirror.endpoint)
    src = models["org/tiny"]
    info = api.model_info("org/tiny")
    assert info.id == "org/tiny"
    assert info.sha == mirror.commit()
    assert sorted(s.rfilename for s in info.siblings) == sorted(files_of(src))
    detailed = api.model_info("org/tiny", revision=mirror.commit(), files_metadata=True)
    for s in detailed.siblings:
        data = (src / s.rfilename).read_bytes()
        assert s.size == len(data)
        if s.rfilename.endswith(".safetensors"):
            assert s.lfs.sha256 == hashlib.sha256(data).hexdigest()
        else:
            assert s.lfs is None
            assert s.blob_id == git_blob_id(data)


def test_list_repo_files_and_tree(mirror, models):
    api = HfApi(endpoint=mirror.endpoint)
    assert sorted(api.list_repo_files("org/tiny")) == sorted(files_of(models["org/tiny"]))
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("org/tiny")}
    assert top["docs"] == "RepoFolder" and top["config.json"] == "RepoFile"
    assert "docs/100%.txt" not in top
    sub = sorted(e.path for e in api.list_repo_tree("org/tiny", path_in_repo="docs", recursive=True))
    assert sub == ["docs/100%.txt", "docs/deep", "docs/deep/a b.txt"]
    files = [e for e in api.list_repo_tree("org/tiny", recursive=True) if type(e).__name__ == "RepoFile"]
    lfs = {e.path: e.lfs for e in files}
    assert lfs["model.safetensors"].sha256 == hashlib.sha256(
        (models["org/tiny"] / "model.safetensors").read_bytes()).hexdigest()
    assert lfs["config.json"] is None


def test_tree_pagination_followed_by_the_client(mirror, models):
    files = HfApi(endpoint=mirror.endpoint).list_repo_files("org/many")
    assert len(files) == 1105
    assert sorted(files) == sorted(files_of(models["org/many"]))


def test_get_paths_info(mirror):
    api = HfApi(endpoint=mirror.endpoint)
    infos = api.get_paths_info("org/tiny", ["config.json", "docs", "missing.bin", "model.safetensors"])
    kinds = {i.path: type(i).__name__ for i in infos}
    assert kinds == {"config.json": "RepoFile", "docs": "RepoFolder", "model.safetensors": "RepoFile"}


def test_hf_file_system_ranged_reads(mirror, models):
    fs = HfFileSystem(endpoint=mirror.endpoint)
    data = (models["org/tiny"] / "model.safetensors").read_bytes()
    assert fs.info("org/tiny/model.safetensors")["size"] == len(data)
    with fs.open("org/tiny/model.safetensors", "rb", block_size=4096) as f:
        f.seek(1000)
        assert f.read(5000) == data[1000:6000]
        f.seek(len(data) - 10)
        assert f.read(100) == data[-10:]
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("org/tiny", detail=False))
    assert "model.safetensors" in names and "docs" in names
    assert fs.cat_file(f"org/tiny@{mirror.commit()}/docs/100%.txt") == b"percent\n"


def test_missing_file_repo_and_revision(mirror, tmp_path):
    kw = dict(endpoint=mirror.endpoint, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", "nope.json", **kw)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/absent", "config.json", **kw)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="no-such-branch", **kw)
    api = HfApi(endpoint=mirror.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/absent")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/tiny", revision="f" * 40)
    assert not api.file_exists("org/tiny", "nope.json")
    assert api.file_exists("org/tiny", "config.json")


@pytest.mark.parametrize("repo", ["org/tiny", "org/sharded"])
def test_transformers_from_pretrained_through_hf_endpoint(mirror, models, repo, tmp_path):
    script = f"""
import torch
from transformers import AutoModelForCausalLM
remote = AutoModelForCausalLM.from_pretrained({repo!r})
local = AutoModelForCausalLM.from_pretrained({str(models[repo])!r})
ids = torch.tensor([[1, 5, 9, 17]])
with torch.no_grad():
    a, b = remote(ids).logits, local(ids).logits
assert torch.equal(a, b), (a - b).abs().max()
print("same logits", tuple(a.shape))
"""
    env = dict(os.environ, HF_ENDPOINT=mirror.endpoint, HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "same logits" in out.stdout
    assert (tmp_path / "hf" / "hub" / ("models--" + repo.replace("/", "--"))).is_dir()


def test_ids_are_the_ones_git_computes(mirror, models, tmp_path):
    """Blob and tree ids in the tree API are real git object ids: LFS files as their pointers."""
    import shutil
    git = shutil.which("git")
    if git is None:
        if os.environ.get("CI"):
            pytest.fail("git is not installed (scripts/install-deps.sh installs it)")
        pytest.skip("git is not installed")
    work = tmp_path / "repo"
    shutil.copytree(models["org/tiny"], work)
    for p in work.glob("*.safetensors"):
        data = p.read_bytes()
        p.write_text("version https://git-lfs.github.com/spec/v1\n"
                     f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n")
    run = lambda *a: subprocess.run([git, "-C", str(work), *a], check=True, capture_output=True,
                                    text=True).stdout.strip()
    run("init", "-q")
    run("add", "-A")
    tree = run("write-tree")
    entries = HfApi(endpoint=mirror.endpoint).list_repo_tree("org/tiny", recursive=True)
    checked = 0
    for e in entries:
        want = run("rev-parse", f"{tree}:{e.path}")
        got = e.blob_id if type(e).__name__ == "RepoFile" else e.tree_id
        assert got == want, e.path
        checked += 1
    assert checked == len(files_of(models["org/tiny"])) + 2  # + docs, docs/deep
