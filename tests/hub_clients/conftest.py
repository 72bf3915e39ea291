"""Fixtures for the tests of `layercache serve` with the real Hub clients.

Run by ctest through scripts/venv-pytest.sh with the test virtualenv's python
(huggingface_hub, transformers, torch from PyPI, pinned in
python/requirements-test.txt). LAYERCACHE_CLI names the layercache binary.
"""
import os
import subprocess
import sys
import threading

import pytest

CLI = os.environ.get("LAYERCACHE_CLI", "")


class Mirror:
    """A `layercache serve` process on loopback."""

    def __init__(self, args, log_path, extra_env=None):
        env = dict(os.environ)
        env.update(extra_env or {})
        self.log_path = str(log_path)
        self.proc = subprocess.Popen(
            [CLI, "serve", *args, "--port", "0", "--access-log", self.log_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.revisions = {}  # repo id -> {ref name: commit}
        self.endpoint = None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("serving "):
                parts = line.split()
                self.revisions[parts[1]] = dict(p.split("=", 1) for p in parts[2:])
            if line.startswith("HF_ENDPOINT="):
                self.endpoint = line.split("=", 1)[1]
                break
        if self.endpoint is None:
            err = self.proc.stderr.read()
            self.proc.wait()
            raise RuntimeError(f"layercache serve {' '.join(args)} did not start: {err}")
        self.host, port = self.endpoint[len("http://"):].rsplit(":", 1)
        self.port = int(port)
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def commit(self, repo="org/tiny", ref="main"):
        return self.revisions[repo][ref]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _tiny_llama(path, shard=None, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    if shard:
        model.save_pretrained(path, max_shard_size=shard)
    else:
        model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Checkpoints written by transformers: org/tiny (one file), org/sharded, org/many."""
    if not CLI or not os.path.exists(CLI):
        pytest.fail("LAYERCACHE_CLI does not name the layercache binary (run through ctest)")
    root = tmp_path_factory.mktemp("models")
    tiny = _tiny_llama(root / "tiny")
    (tiny / "docs").mkdir()
    (tiny / "docs" / "100%.txt").write_text("percent\n")
    (tiny / "docs" / "deep").mkdir()
    (tiny / "docs" / "deep" / "a b.txt").write_text("space\n")
    (tiny / "README.md").write_text("# tiny\n")
    sharded = _tiny_llama(root / "sharded", shard="40KB", seed=1)
    assert (sharded / "model.safetensors.index.json").exists()
    many = root / "many"
    many.mkdir()
    for i in range(1105):  # more than one page (1000) of the tree API
        (many / f"f{i:05d}.txt").write_text(str(i))
    return {"org/tiny": tiny, "org/sharded": sharded, "org/many": many}


@pytest.fixture(scope="session")
def mirror(models, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "access.log"
    args = ["--repo", f"org/tiny={models['org/tiny']}",
            "--repo", f"org/sharded={models['org/sharded']}",
            "--repo", f"org/many={models['org/many']}",
            "--repo", f"single={models['org/tiny']}"]
    m = Mirror(args, log)
    yield m
    m.stop()


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """A fresh Hugging Face cache for the clients of one test."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def files_of(directory):
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, directory)] = open(p, "rb").read()
    return out
