"""The proxy's status listener is an HTTP listener on the proxy's own engine (src/http on
src/net, issue 12): a slow or silent client holds only its own connection, keep-alive and
pipelining work, unknown paths get a JSON 404, and a scraper's keep-alive connection does
not hold the SIGTERM drain."""
import http.client
import json
import signal
import socket
import time

import pytest

from proxy_util import EchoServer, Proxy, forge_client_cert, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def proxy(pki):
    echo = EchoServer()
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--allow-all", "--workers", "1")
    yield p
    p.stop(signal.SIGKILL)
    echo.close()


def test_slow_clients_do_not_block_others(proxy):
    # five clients that send half a request and then nothing, one that sends nothing at all
    stuck = []
    for i in range(6):
        s = socket.create_connection(("127.0.0.1", proxy.status_port), timeout=10)
        if i:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        stuck.append(s)
    try:
        t0 = time.monotonic()
        for _ in range(20):
            c = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=5)
            c.request("GET", "/healthz")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"ok\n"
            c.close()
        # bounded by the layer's time limits, not by the stuck clients (no timing assertion
        # beyond "did not wait for them": their head timeout is 2 s each, serially 12 s)
        assert time.monotonic() - t0 < 10
    finally:
        for s in stuck:
            s.close()


def test_keep_alive_pipelining_and_json_errors(proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=5)
    bodies = {}
    for path in ("/healthz", "/metrics", "/readyz"):
        c.request("GET", path)
        r = c.getresponse()
        bodies[path] = r.read()
        assert r.status == 200, (path, bodies[path])
    assert b"meshtls_tls_handshakes_total" in bodies["/metrics"]
    c.request("GET", "/nope")
    r = c.getresponse()
    assert r.status == 404
    err = json.loads(r.read())
    assert "error" in err and err["error"]["message"]
    c.request("POST", "/metrics", body=b"x")
    r = c.getresponse()
    assert r.status == 405 and "GET" in (r.getheader("Allow") or "")
    r.read()
    c.close()
    # two requests in one write: both answered, in order
    with socket.create_connection(("127.0.0.1", proxy.status_port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got.count(b"HTTP/1.1 200") == 2, got


def test_smuggling_is_refused(proxy):
    with socket.create_connection(("127.0.0.1", proxy.status_port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 400"), got


def test_keep_alive_scraper_does_not_hold_the_drain(proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=5)
    c.request("GET", "/metrics")
    c.getresponse().read()  # the connection stays open (keep-alive)
    t0 = time.monotonic()
    assert proxy.stop(signal.SIGTERM, timeout=20) == 0
    # the default --shutdown-timeout is 30 s: the drain did not wait for the scraper
    assert time.monotonic() - t0 < 15
    assert "shutdown complete: all connections drained" in proxy.log()
    c.close()


def test_readyz_follows_the_target_healthz_does_not(pki):
    """/readyz is 503 while the target does not answer (a bounded connect when asked, as
    ghostunnel's backend_ok), 200 again once it does; /healthz stays 200 (liveness)."""
    from conftest import free_port, wait_port
    import subprocess
    port = free_port()
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--allow-all")
    backend = None
    try:
        def status(path):
            conn = http.client.HTTPConnection("127.0.0.1", p.status_port, timeout=5)
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return r.status, body
        deadline = time.monotonic() + 10
        while status("/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status("/readyz") == (503, b"not ready: the target does not answer\n")
        assert status("/healthz")[0] == 200
        assert p.metrics()["meshtls_target_up"] == 0
        assert "does not answer" in p.log()
        backend = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind",
                                    "127.0.0.1"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_port(port, proc=backend)
        deadline = time.monotonic() + 15  # a check at most once a second
        while status("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status("/readyz")[0] == 200
        assert p.metrics()["meshtls_target_up"] == 1
        assert "answers again" in p.log()
    finally:
        p.stop(signal.SIGKILL)
        if backend:
            backend.terminate()
            backend.wait(10)


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_readyz_follows_our_certificate(pki, tmp_path):
    """/readyz turns 503 once our own certificate expires, and names it (file, identity,
    when) with the fix; /healthz stays 200: a restart would not help."""
    forged = forge_client_cert(pki, tmp_path / "short", name="api", seconds_left=6)
    echo = EchoServer()
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", forged / "api.crt",
              "--key", forged / "api.key", "--cacert", c / "ca.crt", "--allow-all")
    try:
        deadline = time.monotonic() + 30  # bounded: the certificate has 6 s left
        while get(p.status_port, "/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        status, body = get(p.status_port, "/readyz")
        assert status == 503, body
        text = body.decode()
        assert f"our certificate {forged / 'api.crt'}" in text, text
        assert "spiffe://test.local/svc/api" in text and "expired at" in text, text
        assert "renew" in text, text
        assert get(p.status_port, "/healthz") == (200, b"ok\n")
    finally:
        p.stop(signal.SIGKILL)
        echo.close()
