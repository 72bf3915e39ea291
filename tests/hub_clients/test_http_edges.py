"""Raw HTTP requests at the edges of RFC 9110 and of the server's limits."""
import hashlib
import http.client
import json
import socket
import subprocess
import time

import pytest

from conftest import CLI, Mirror

SAFETENSORS = "/org/tiny/resolve/main/model.safetensors"


def request(mirror, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection(mirror.host, mirror.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r, data


@pytest.fixture(scope="module")
def weights(models):
    return (models["org/tiny"] / "model.safetensors").read_bytes()


def test_range_end_clamped_to_the_file(mirror, weights):
    # How huggingface_hub reads a safetensors header: far past a small file's end.
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": "bytes=0-100000000"})
    assert r.status == 206
    assert r.getheader("Content-Range") == f"bytes 0-{len(weights) - 1}/{len(weights)}"
    assert int(r.getheader("Content-Length")) == len(weights)
    assert data == weights


@pytest.mark.parametrize("spec,first,last", [
    ("bytes=10-19", 10, 19),
    ("bytes=100-", 100, None),
    ("bytes=-100", -100, None),          # suffix: the last 100 bytes
    ("bytes=-100000000", 0, None),       # suffix longer than the file: all of it
    ("BYTES=5-5", 5, 5),                 # the unit is case-insensitive
    ("bytes= 7-8", 7, 8),
])
def test_satisfiable_ranges(mirror, weights, spec, first, last):
    size = len(weights)
    f = first if first >= 0 else size + first
    l = size - 1 if last is None else last
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": spec})
    assert r.status == 206, spec
    assert r.getheader("Content-Range") == f"bytes {f}-{l}/{size}"
    assert data == weights[f:l + 1]


@pytest.mark.parametrize("spec", ["bytes=100000000-", "bytes=-0", "bytes=100000000-100000001",
                                  "bytes=99999999999999999999999-"])
def test_unsatisfiable_ranges_are_416(mirror, weights, spec):
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": spec})
    assert r.status == 416, spec
    assert r.getheader("Content-Range") == f"bytes */{len(weights)}"
    assert "error" in json.loads(data)
    assert r.getheader("X-Repo-Commit") == mirror.commit()


@pytest.mark.parametrize("spec", ["bytes=20-10", "items=0-5", "bytes=abc", "bytes=0-5,10-20", "bytes="])
def test_ranges_ignored_are_the_whole_file(mirror, weights, spec):
    # RFC 9110 14.2: invalid ranges, other units and (here) several ranges: 200, all of it.
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": spec})
    assert r.status == 200, spec
    assert r.getheader("Content-Range") is None
    assert data == weights


def test_range_never_applied_to_an_error(mirror):
    r, data = request(mirror, "GET", "/org/tiny/resolve/main/absent.bin", {"Range": "bytes=0-0"})
    assert r.status == 404
    body = json.loads(data)  # the whole JSON body, not its first byte
    assert "absent.bin" in body["error"]
    assert r.getheader("X-Error-Code") == "EntryNotFound"
    assert r.getheader("X-Repo-Commit") == mirror.commit()
    assert r.getheader("Content-Range") is None


def test_if_range(mirror, weights):
    etag = '"' + hashlib.sha256(weights).hexdigest() + '"'
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": "bytes=0-9", "If-Range": etag})
    assert r.status == 206 and data == weights[:10]
    r, data = request(mirror, "GET", SAFETENSORS, {"Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status == 200 and data == weights


def test_if_none_match(mirror, weights):
    etag = '"' + hashlib.sha256(weights).hexdigest() + '"'
    r, data = request(mirror, "GET", SAFETENSORS, {"If-None-Match": etag})
    assert r.status == 304 and data == b""
    assert r.getheader("ETag") == etag


def test_head_ignores_range_and_matches_get(mirror, weights):
    r, data = request(mirror, "HEAD", SAFETENSORS, {"Range": "bytes=0-9"})
    assert r.status == 200 and data == b""
    assert int(r.getheader("Content-Length")) == len(weights)
    sha = hashlib.sha256(weights).hexdigest()
    assert r.getheader("ETag") == f'"{sha}"'
    assert r.getheader("X-Linked-Etag") == f'"{sha}"'
    assert r.getheader("X-Linked-Size") == str(len(weights))
    assert r.getheader("X-Repo-Commit") == mirror.commit()


@pytest.mark.parametrize("path", [
    "/org/tiny/resolve/main/config.json", "/org/tiny/raw/main/config.json",
    "/org/tiny/raw/main/model.safetensors", "/api/models/org/tiny",
    "/api/models/org/tiny/revision/main", "/api/models/org/tiny/tree/main",
    "/api/models/org/tiny/tree/main/docs?recursive=true", "/api/models/org/tiny/refs",
    "/org/tiny/resolve/main/absent", "/api/models/org/absent", "/no/such/route",
])
def test_head_on_every_route(mirror, path):
    g, gdata = request(mirror, "GET", path)
    h, hdata = request(mirror, "HEAD", path)
    assert h.status == g.status, path
    assert hdata == b""
    assert int(h.getheader("Content-Length")) == len(gdata)
    for name in ["ETag", "X-Repo-Commit", "X-Error-Code", "Content-Type"]:
        assert h.getheader(name) == g.getheader(name), (path, name)


def test_raw_is_what_git_stores(mirror, weights, models):
    r, data = request(mirror, "GET", "/org/tiny/raw/main/model.safetensors")
    sha = hashlib.sha256(weights).hexdigest()
    assert data == f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(weights)}\n".encode()
    assert r.getheader("ETag") == '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'
    r, data = request(mirror, "GET", "/org/tiny/raw/main/config.json")
    assert data == (models["org/tiny"] / "config.json").read_bytes()


def test_paths_are_decoded_once(mirror):
    r, data = request(mirror, "GET", "/org/tiny/resolve/main/docs/100%25.txt")
    assert r.status == 200 and data == b"percent\n"
    r, data = request(mirror, "GET", "/org/tiny/resolve/main/docs/deep/a%20b.txt")
    assert r.status == 200 and data == b"space\n"
    # "%2525" is the name "100%25.txt", which does not exist: decoded once, not twice.
    r, _ = request(mirror, "GET", "/org/tiny/resolve/main/docs/100%2525.txt")
    assert r.status == 404 and r.getheader("X-Error-Code") == "EntryNotFound"
    # A revision with '/' arrives encoded as one segment.
    r, _ = request(mirror, "GET", "/org/tiny/resolve/refs%2Fpr%2F1/config.json")
    assert r.status == 404 and r.getheader("X-Error-Code") == "RevisionNotFound"


@pytest.mark.parametrize("path", ["/org/tiny/resolve/main/%zz", "/org/tiny/resolve/main/%",
                                  "/org/tiny/resolve/main/a%00b", "/api/models/org/tiny/tree/main?cursor=%g"])
def test_malformed_paths_are_400(mirror, path):
    r, data = request(mirror, "GET", path)
    assert r.status == 400, path
    assert json.loads(data)["error"]


def test_errors_as_the_hub_sends_them(mirror):
    cases = [("/org/absent/resolve/main/config.json", "RepoNotFound", None),
             ("/org/tiny/resolve/nobranch/config.json", "RevisionNotFound", None),
             ("/org/tiny/resolve/main/nofile", "EntryNotFound", mirror.commit()),
             ("/api/models/org/tiny/revision/nobranch", "RevisionNotFound", None),
             ("/api/models/org/tiny/tree/main/nodir", "EntryNotFound", mirror.commit())]
    for path, code, commit in cases:
        r, data = request(mirror, "GET", path)
        assert r.status == 404, path
        assert r.getheader("X-Error-Code") == code, path
        assert r.getheader("X-Error-Message") == json.loads(data)["error"]
        assert r.getheader("Content-Type").startswith("application/json")
        assert r.getheader("X-Repo-Commit") == commit, path


@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/org"), ("GET", "/api/spaces-x"),
                                         ("GET", "/api/models/org/tiny/commits/main"),
                                         ("GET", "/org/tiny/blob/main/config.json")])
def test_unknown_routes_are_a_plain_404(mirror, method, path):
    r, data = request(mirror, method, path)
    assert r.status == 404
    assert r.getheader("X-Error-Code") is None
    assert r.getheader("Content-Type").startswith("text/plain")


def test_wrong_methods(mirror):
    r, _ = request(mirror, "POST", "/org/tiny/resolve/main/config.json", body=b"")
    assert r.status == 405 and "GET" in r.getheader("Allow")
    r, _ = request(mirror, "GET", "/api/models/org/tiny/paths-info/main")
    assert r.status == 405 and r.getheader("Allow") == "POST"


def test_paths_info_json_body_and_errors(mirror):
    body = json.dumps({"paths": ["config.json", "docs/deep"], "expand": False})
    r, data = request(mirror, "POST", "/api/models/org/tiny/paths-info/main", {"Content-Type": "application/json"}, body)
    assert r.status == 200
    assert sorted((e["path"], e["type"]) for e in json.loads(data)) == [("config.json", "file"), ("docs/deep", "directory")]
    r, data = request(mirror, "POST", "/api/models/org/tiny/paths-info/main", {"Content-Type": "application/json"}, "{not json")
    assert r.status == 400 and json.loads(data)["error"]


def test_tree_pagination_link(mirror):
    seen, path = [], "/api/models/org/many/tree/main?limit=400"
    while path:
        r, data = request(mirror, "GET", path)
        assert r.status == 200
        page = json.loads(data)
        assert len(page) <= 400
        seen += [e["path"] for e in page]
        link = r.getheader("Link")
        if link is None:
            break
        url = link[link.index("<") + 1:link.index(">")]
        assert url.startswith(f"http://{mirror.host}:{mirror.port}/")
        path = url[len(f"http://{mirror.host}:{mirror.port}"):]
    assert len(seen) == 1105 and len(set(seen)) == 1105


def raw_exchange(mirror, payload, timeout=30):
    s = socket.create_connection((mirror.host, mirror.port), timeout=timeout)
    s.sendall(payload)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


@pytest.mark.parametrize("payload,status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /x HTTP/1.1\r\n\r\n", b"400"),                       # no Host
    (b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", b"505"),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
    (b"POST /api/models/org/tiny/paths-info/main HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n", b"413"),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
    (b"GET /" + b"a" * 80000, b"414"),                          # still arriving
    (b"BREW /org/tiny/resolve/main/config.json HTTP/1.1\r\nHost: a\r\n\r\n", b"501"),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
    (b"POST /api/models/org/tiny/paths-info/main HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\npaths=", b"400"),               # conflicting lengths
    (b"GET /org/tiny/resolve/main/config.json HTTP/1.1\r\nHost: a\r\n bad: fold\r\n\r\n", b"400"),
])
def test_bad_requests_get_a_4xx_and_the_server_lives_on(mirror, payload, status):
    out = raw_exchange(mirror, payload)
    assert out.startswith(b"HTTP/1.1 " + status), out[:200]
    r, _ = request(mirror, "GET", "/org/tiny/resolve/main/config.json")
    assert r.status == 200


def test_keep_alive_serves_several_requests_on_one_connection(mirror):
    conn = http.client.HTTPConnection(mirror.host, mirror.port, timeout=30)
    for _ in range(3):
        conn.request("GET", "/org/tiny/resolve/main/config.json")
        r = conn.getresponse()
        assert r.status == 200 and r.read()
    conn.close()


def test_access_log_has_one_line_per_request(mirror):
    # The server writes a request's line after sending its response (as nginx does), so a line
    # can land after the client has read the reply: wait for the lines of these requests, then
    # check that there is exactly one each. Lines of earlier tests may still arrive meanwhile.
    for i in range(3):
        request(mirror, "GET", f"/api/models/org/tiny?log-probe={i}")

    def probe_lines():
        return [l for l in open(mirror.log_path).read().splitlines() if "log-probe=" in l]

    deadline = time.monotonic() + 30
    while len(probe_lines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = probe_lines()
    assert len(lines) == 3, lines
    for i in range(3):
        assert sum(f'"GET /api/models/org/tiny?log-probe={i} HTTP/1.1" 200' in l for l in lines) == 1


def wait_for_log_line(mirror, probe):
    """The access-log lines that contain probe, once there is one (the server logs after answering)."""
    def lines():
        return [l for l in open(mirror.log_path).read().splitlines() if probe in l]
    deadline = time.monotonic() + 30
    while not lines() and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines()


def test_access_log_names_the_client_of_an_unsupported_method(mirror):
    out = raw_exchange(mirror, b"BREW /org/tiny/resolve/main/config.json?ua-probe HTTP/1.1\r\n"
                               b"Host: a\r\nUser-Agent: teapot-client/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501"), out[:200]
    lines = wait_for_log_line(mirror, "ua-probe")
    assert len(lines) == 1, lines
    assert '" 501 ' in lines[0] and '"teapot-client/1.0"' in lines[0], lines[0]


def test_content_types_are_the_hubs(mirror):
    # The Hub answers resolve/ of a text file (config.json included) as text/plain; charset=utf-8
    # and of an LFS file as application/octet-stream; its API answers are application/json.
    r, data = request(mirror, "GET", "/org/tiny/resolve/main/config.json")
    assert r.status == 200 and r.getheader("Content-Type") == "text/plain; charset=utf-8"
    json.loads(data)
    r, _ = request(mirror, "HEAD", SAFETENSORS)
    assert r.getheader("Content-Type") == "application/octet-stream"
    r, _ = request(mirror, "GET", "/api/models/org/tiny")
    assert r.getheader("Content-Type").startswith("application/json")


def test_busy_port_and_bad_port_are_refused(mirror, models):
    out = subprocess.run([CLI, "serve", str(models["org/tiny"]), "--repo-id", "a/b", "--port",
                          str(mirror.port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3  # a runtime error (README "Exit codes")
    assert "already in use" in out.stderr
    out = subprocess.run([CLI, "serve", str(models["org/tiny"]), "--repo-id", "a/b", "--port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2  # usage
    assert "65535" in out.stderr and "70000" in out.stderr  # names the range and the value


def test_connection_bound_and_request_timeout(models, tmp_path):
    m = Mirror(["--repo", f"org/tiny={models['org/tiny']}", "--threads", "1",
                "--max-connections", "2", "--timeout", "2"], tmp_path / "log")

    def read_all(sock):
        out = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return out
            out += chunk

    try:
        held = [socket.create_connection((m.host, m.port), timeout=30) for _ in range(2)]
        # The only thread waits for the rest of this request ...
        held[0].sendall(b"GET /org/tiny/resolve/main/config.json HTTP/1.1\r\nHost: a\r\n")
        # ... this complete one waits for the thread.
        held[1].sendall(b"GET /org/tiny/resolve/main/config.json HTTP/1.1\r\nHost: a\r\n"
                        b"Connection: close\r\n\r\n")
        # A third connection is over the bound: 503 at once.
        out = raw_exchange(m, b"GET /api/models/org/tiny HTTP/1.1\r\nHost: a\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503"), out[:100]
        # A refused client that neither reads nor closes does not hold the server: it gets its
        # 503 and the end of the connection, and the next refused client too.
        idle = socket.create_connection((m.host, m.port), timeout=30)
        idle.sendall(b"GET /api/models/org/tiny HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_all(idle).startswith(b"HTTP/1.1 503")
        idle.close()
        out = raw_exchange(m, b"GET /api/models/org/tiny HTTP/1.1\r\nHost: a\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503"), out[:100]
        # The unfinished request times out with 408 (after --timeout) and its connection closes;
        # then the waiting request is served.
        assert read_all(held[0]).startswith(b"HTTP/1.1 408")
        assert read_all(held[1]).startswith(b"HTTP/1.1 200")
        for s in held:
            s.close()
    finally:
        m.stop()
