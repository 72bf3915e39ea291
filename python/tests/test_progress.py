"""`layercache fetch`'s progress bar as a user sees it: on a terminal (a pty) one line redrawn with
the overall layers done of the total, bytes, rate and ETA, never wider than the terminal; nothing on
stderr off a terminal unless --progress asks for plain lines."""
import os
import re
import select
import struct
import subprocess

import pytest

import synthetic_models as sm
from needs import need

fcntl = pytest.importorskip("fcntl")
termios = pytest.importorskip("termios")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli and os.access(cli, os.X_OK), "LAYERCACHE_CLI (the layercache binary) is not set")
    repo = tmp_path_factory.mktemp("repo")
    sm.write_model(str(repo), "qwen2", layers=3)
    server = subprocess.Popen([cli, "serve", str(repo), "--repo-id", "org/tiny"], stdout=subprocess.PIPE,
                              text=True)
    # serve prints where it listens, then "HF_ENDPOINT=...": reading it waits until it listens.
    endpoint = [server.stdout.readline(), server.stdout.readline()][1].split("=", 1)[1].strip()
    yield cli, endpoint
    server.terminate()
    server.wait(timeout=30)


def fetch_on_a_pty(cli, endpoint, cache_dir, cols, env_columns=None):
    """Runs fetch with stderr on a pty of `cols` columns (0: the pty does not say); returns
    (stderr as the terminal received it, stdout)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = dict(os.environ, HF_ENDPOINT=endpoint)
    env.pop("COLUMNS", None)
    if env_columns:
        env["COLUMNS"] = str(env_columns)
    p = subprocess.Popen([cli, "--cache-dir", str(cache_dir), "fetch", "org/tiny"], stdout=subprocess.PIPE,
                         stderr=slave, stdin=subprocess.DEVNULL, env=env)
    return read_pty(p, master, slave)


def read_pty(p, master, slave):
    """Reads what process `p` writes to the pty until it closes its end; returns (the terminal's text,
    stdout), asserting that `p` succeeded."""
    os.close(slave)
    got = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, "no output within 120 s"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    out = p.stdout.read()
    assert p.wait(timeout=120) == 0, got
    return got.decode(), out.decode()


def drawn_lines(tty_text):
    """What the terminal showed on each redraw: the text between carriage returns, without the
    clear-to-end-of-line sequence and line ends."""
    return [seg.replace("\x1b[K", "").rstrip("\r\n") for seg in re.split(r"\r(?!\n)", tty_text) if
            seg.replace("\x1b[K", "").strip()]


@pytest.mark.parametrize("cols,env_columns", [(80, None), (50, None), (0, 80), (0, 44)])
def test_the_bar_fits_the_terminal_and_counts_layers_of_the_whole_fetch(mirror, tmp_path, cols, env_columns):
    cli, endpoint = mirror
    width = cols or env_columns
    tty, out = fetch_on_a_pty(cli, endpoint, tmp_path / "cache", cols, env_columns)
    lines = drawn_lines(tty)
    bars = [l for l in lines if "ETA" in l]
    assert bars, repr(tty)
    for l in bars:
        assert len(l) <= width - 1, (width, l)  # never wraps (the cursor needs the last column)
        assert re.search(r" [0-3]/3 \d+(\.\d)? (B|KiB|MiB) \d+(\.\d)? (B|KiB|MiB|GiB)/s ETA (--|\d+s)", l), l
    # The first layer's redraw and the last one: the overall count, not a per-layer bar.
    assert any(" 1/3 " in l for l in bars) and any(" 3/3 " in l for l in bars), bars
    # Then one summary line with the total and the time.
    assert re.search(r"fetch org/tiny 3/3 +\d+(\.\d)? (KiB|MiB) in [\d.]+ s", tty), repr(tty)
    assert "fetched 3 layers of org/tiny" in out
    assert "\r" not in out and "\x1b" not in out


def test_nothing_off_a_terminal_unless_asked(mirror, tmp_path):
    cli, endpoint = mirror
    env = dict(os.environ, HF_ENDPOINT=endpoint)
    r = subprocess.run([cli, "--cache-dir", str(tmp_path / "a"), "fetch", "org/tiny"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert [l for l in r.stdout.splitlines() if l.startswith("layer ")] == [
        l for l in r.stdout.splitlines() if re.match(r"layer [0-2]: \d+ tensors, ", l)]
    assert "fetched 3 layers" in r.stdout
    # --progress: plain lines (no carriage returns, no escape sequences), ending with 3 of 3.
    r = subprocess.run([cli, "--cache-dir", str(tmp_path / "b"), "fetch", "org/tiny", "--progress"],
                       capture_output=True, text=True, env=dict(env, COLUMNS="80"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\x1b" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(len(l) <= 79 for l in lines if "ETA" in l), lines
    assert any(" 3/3 " in l and "ETA" in l for l in lines), lines
    assert re.match(r"fetch org/tiny 3/3 ", lines[-1]), lines


def python_on_a_pty(code, cols=80):
    """Runs `code` in a new Python process with stderr on a pty of `cols` columns; returns what the
    terminal received."""
    import sys
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave,
                         stdin=subprocess.DEVNULL, env=env)
    return read_pty(p, master, slave)


@pytest.mark.parametrize("quiet", [False, True])
def test_python_download_and_import_draw_the_bar_on_a_terminal_unless_quiet(mirror, tmp_path, quiet):
    # The library draws nothing itself (progress is a callback): the Python module passes the
    # terminal bar, as the CLI does, for download_and_cache and import_checkpoint.
    _, endpoint = mirror
    ckpt = tmp_path / "ckpt"
    sm.write_model(str(ckpt), "qwen2", layers=3)
    code = f"""
import layercache
c = layercache.LayerCache(cache_dir={str(tmp_path / 'cache')!r})
assert c.download_and_cache("tiny", 0, "org/tiny", endpoint={endpoint!r}, quiet={quiet}) is not None
assert c.import_checkpoint({str(ckpt)!r}, "local", quiet={quiet}) > 0
print("ok")
"""
    tty, out = python_on_a_pty(code)
    assert out.strip() == "ok"
    bars = [l for l in drawn_lines(tty) if "ETA" in l]
    if quiet:
        assert not bars, repr(tty)
    else:
        assert any("fetch" in l for l in bars), repr(tty)
        assert any("import" in l for l in bars), repr(tty)
        assert all(len(l) <= 79 for l in bars), bars


def test_python_draws_nothing_off_a_terminal(mirror, tmp_path):
    import sys
    _, endpoint = mirror
    code = f"""
import layercache
c = layercache.LayerCache(cache_dir={str(tmp_path / 'cache')!r})
assert c.download_and_cache("tiny", 0, "org/tiny", endpoint={endpoint!r}) is not None
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ETA" not in r.stderr, r.stderr
