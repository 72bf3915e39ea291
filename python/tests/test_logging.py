"""The C++ core's messages reach Python's logging module (layercache._logbridge).
Each check runs in a fresh interpreter: the log level and LAYERCACHE_LOG are per process."""
import os
import subprocess
import sys
import textwrap

import layercache

import synthetic_models as sm
from needs import need

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_PARENT = os.path.dirname(os.path.dirname(layercache.__file__))

# Collects the "layercache" logger's records and prints them as "LEVELNAME|message" lines.
COLLECT = """
import logging
records = []
class Collect(logging.Handler):
    def emit(self, record):
        records.append(record)
logging.getLogger().addHandler(Collect())
def dump():
    for r in records:
        print(r.name + "|" + r.levelname + "|" + r.getMessage().replace("\\n", " "))
"""


def run_fresh(code, env=None, check=True):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, HERE]))
    e.pop("LAYERCACHE_LOG", None)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env=e, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def records(stdout):
    return [tuple(line.split("|", 2)) for line in stdout.splitlines() if line.startswith("layercache|")]


def test_a_corrupt_entry_is_a_warning_record(tmp_path):
    out = run_fresh(COLLECT + f"""
import glob, numpy as np, layercache
c = layercache.LayerCache(cache_dir={str(tmp_path / "cache")!r}, max_memory_cache_size_gb=0)
c.cache_layer("m", 0, {{"w": np.ones(64, dtype=np.float32)}})
(path,) = glob.glob({str(tmp_path / "cache")!r} + "/entries/*/*.safetensors")
data = bytearray(open(path, "rb").read())
data[-3] ^= 0xFF
open(path, "wb").write(bytes(data))
assert c.get_layer("m", 0) is None
assert layercache.flush_logs()
dump()
""")
    recs = records(out.stdout)
    assert any(level == "WARNING" and "corrupt cache entry for m/0" in msg for _, level, msg in recs), recs
    assert "corrupt" not in out.stderr  # went to logging, not straight to fd 2


def test_levels_are_mapped_and_messages_from_cpp_threads_arrive(tmp_path):
    out = run_fresh(COLLECT + """
import layercache
from layercache import _core
layercache.set_log_level("debug")
for name in ("debug", "info", "warn", "error"):
    _core.log.emit(name, "probe " + name)
_core.log.emit("warn", "from a C++ thread", threads=8)   # 8 threads at once, none holding the GIL
assert layercache.flush_logs()
dump()
layercache.set_log_level("error")
_core.log.emit("warn", "below the level")
assert layercache.flush_logs()
print("after:", len(records))
""")
    recs = records(out.stdout)
    assert [(lvl, msg) for _, lvl, msg in recs[:4]] == [
        ("DEBUG", "probe debug"), ("INFO", "probe info"), ("WARNING", "probe warn"), ("ERROR", "probe error")]
    threaded = sorted(msg for _, lvl, msg in recs[4:] if lvl == "WARNING")
    assert threaded == sorted(f"from a C++ thread #{i}" for i in range(8))
    assert "after: 12" in out.stdout  # "off"-filtered at the C++ side: nothing new


def test_layercache_log_debug_shows_a_fetch(tmp_path):
    cli = os.environ.get("LAYERCACHE_CLI")
    need(cli and os.access(cli, os.X_OK), "LAYERCACHE_CLI (the layercache binary) is not set")
    repo = tmp_path / "repo"
    sm.write_model(str(repo), "qwen2", layers=2)
    server = subprocess.Popen([cli, "serve", str(repo), "--repo-id", "org/tiny"], stdout=subprocess.PIPE,
                              text=True)
    try:
        # serve prints where it listens, then "HF_ENDPOINT=...": reading it waits until it listens.
        endpoint = [server.stdout.readline(), server.stdout.readline()][1].split("=", 1)[1].strip()
        code = """
import layercache
c = layercache.LayerCache(cache_dir=%r)
assert c.download_and_cache("tiny", 1, "org/tiny", quiet=True) is not None
assert layercache.flush_logs()
"""
        # With a handler: DEBUG records (the logger takes LAYERCACHE_LOG's level).
        out = run_fresh(COLLECT + code % str(tmp_path / "c1") + "dump()\n",
                        env={"HF_ENDPOINT": endpoint, "LAYERCACHE_LOG": "debug"})
        debug = [msg for _, lvl, msg in records(out.stdout) if lvl == "DEBUG"]
        assert any(m.startswith("download_and_cache tiny/1") for m in debug), debug
        assert any(m.startswith("downloaded tiny/1") for m in debug), debug
        # Without any logging configuration: printed on stderr as the C++ library prints.
        out = run_fresh(code % str(tmp_path / "c2"), env={"HF_ENDPOINT": endpoint, "LAYERCACHE_LOG": "debug"})
        assert "layercache debug: downloaded tiny/1" in out.stderr, out.stderr
        # At the default level (warn): nothing.
        out = run_fresh(COLLECT + code % str(tmp_path / "c3") + "dump()\n", env={"HF_ENDPOINT": endpoint})
        assert records(out.stdout) == [] and "layercache" not in out.stderr, (out.stdout, out.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_unknown_levels_are_errors():
    r = run_fresh("import layercache", env={"LAYERCACHE_LOG": "loud"}, check=False)
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "LAYERCACHE_LOG='loud'" in r.stderr
    assert "debug, info, warn, error or off" in r.stderr
    out = run_fresh("""
import logging, layercache
for bad in ("loud", "", None, 1.5, True):
    try:
        layercache.set_log_level(bad)
    except ValueError:
        pass
    else:
        raise SystemExit(f"accepted {bad!r}")
layercache.set_log_level(logging.INFO)
print(layercache.get_log_level())
layercache.set_log_level("warning")
print(layercache.get_log_level())
layercache.set_log_level(logging.CRITICAL)
print(layercache.get_log_level())
""")
    assert out.stdout.split() == ["info", "warning", "off"]


def test_queued_messages_are_emitted_at_exit_without_a_hang():
    # Messages still queued when the interpreter exits are emitted (atexit), and the exit does not
    # wait on the drain thread or the GIL; later messages (none here) would go to stderr.
    r = run_fresh("""
from layercache import _core
_core.log.emit("warn", "late", threads=50)
""")
    lines = [l for l in r.stderr.splitlines() if l.startswith("layercache warning: late #")]
    assert len(lines) == 50, r.stderr[-2000:]


def test_a_forked_child_still_logs(tmp_path):
    out = run_fresh(COLLECT + """
import os, layercache
from layercache import _core
pid = os.fork()
if pid == 0:
    _core.log.emit("warn", "from the child")
    ok = layercache.flush_logs()
    os._exit(0 if ok and any(r.getMessage() == "from the child" for r in records) else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
_core.log.emit("warn", "from the parent")
assert layercache.flush_logs()
dump()
""")
    assert "child 0" in out.stdout
    assert [m for _, _, m in records(out.stdout)] == ["from the parent"]
