"""The engine at its limits (issue 12, defects): out of file descriptors it pauses the
listener instead of spinning; a drain refuses new connections at once; a drain that times out
closes what is left and exits cleanly with every thread joined."""
import resource
import signal
import socket
import ssl
import time

import pytest

from proxy_util import Proxy, make_pki, wait_for
from proxy_util import echo, procs  # noqa: F401  (pytest fixtures, shared)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_proxy(pki, procs, target_port, *extra):
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{target_port}", "--cert", c / "api.crt",
              "--key", c / "api.key", "--cacert", c / "ca.crt", "--workers", "2",
              "--allow-all", *extra)
    procs.append(p)
    return p


def tls_ctx(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(pki / "certs" / "web.crt"), str(pki / "certs" / "web.key"))
    return ctx


def roundtrip(ctx, port, payload=b"ping"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(payload)
            return s.recv(100)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def test_out_of_descriptors_pauses_instead_of_spinning(pki, procs, echo):
    p = server_proxy(pki, procs, echo.port, "--handshake-timeout", "30s")
    resource.prlimit(p.proc.pid, resource.RLIMIT_NOFILE, (32, 32))
    held = []
    try:
        for _ in range(60):  # about 20 fit under the limit; the rest wait in the backlog
            held.append(socket.create_connection(("127.0.0.1", p.port), timeout=10))
        wait_for(lambda: "cannot accept new connections" in p.log(), what="EMFILE log")
        before = cpu_seconds(p.proc.pid)
        time.sleep(1.5)
        used = cpu_seconds(p.proc.pid) - before
        # A spinning accept loop burns both cores (~3 s here); paused, it sleeps.
        assert used < 0.75, f"proxy used {used:.2f} s of CPU in 1.5 s while out of descriptors"
    finally:
        for s in held:
            s.close()
    ctx = tls_ctx(pki)
    wait_for(lambda: roundtrip(ctx, p.port) == b"ping", timeout=20, what="service again")
    wait_for(lambda: "accepting new connections again" in p.log(), what="recovery log")
    log = p.log()
    assert log.count("cannot accept new connections") == 1, log  # once per episode
    assert "Too many open files" in log
    paused = p.metrics()["meshtls_accept_paused_total"]
    assert 1 <= paused < 500, paused  # a pause per 100 ms and worker, not one per accept4()
    assert p.stop() == 0


def test_drain_refuses_new_connections_at_once(pki, procs, echo):
    p = server_proxy(pki, procs, echo.port, "--shutdown-timeout", "20s")
    ctx = tls_ctx(pki)
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    held = ctx.wrap_socket(raw, server_hostname="localhost")
    held.sendall(b"a")
    assert held.recv(10) == b"a"
    p.signal(signal.SIGTERM)
    wait_for(lambda: "no longer accepting" in p.log(), what="drain log")

    def refused():
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True
    wait_for(refused, timeout=5, what="ECONNREFUSED during the drain")
    held.sendall(b"b")  # the open connection is still served
    assert held.recv(10) == b"b"
    held.close()
    assert p.proc.wait(timeout=15) == 0
    assert "all connections drained" in p.log()


def test_drain_timeout_closes_the_rest_and_exits_cleanly(pki, procs, echo):
    p = server_proxy(pki, procs, echo.port, "--shutdown-timeout", "1s")
    ctx = tls_ctx(pki)
    conns = []
    for _ in range(3):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port), timeout=10),
                            server_hostname="localhost")
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        conns.append(s)
    p.signal(signal.SIGTERM)
    assert p.proc.wait(timeout=15) == 0
    log = p.log()
    assert "shutdown timeout: closing 3 connection(s)" in log
    assert log.count('reason="shutdown timeout"') == 3, log
    for s in conns:  # each client reads a clean end of stream (close_notify)
        s.settimeout(5)
        assert s.recv(10) == b""
        s.close()
    assert p.stop() == 0  # no sanitizer report


def test_alpn_survives_100_reloads_under_load(pki, procs, echo):
    """A reload used to rewrite the one ALPN list while workers read it, so a handshake could
    negotiate no ALPN and break gRPC; each context now carries its own list."""
    import threading
    p = server_proxy(pki, procs, echo.port, "--alpn", "h2,http/1.1")
    ctx = tls_ctx(pki)
    ctx.set_alpn_protocols(["h2"])
    got, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(got) < 5000:
            with socket.create_connection(("127.0.0.1", p.port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    got.append(s.selected_alpn_protocol())
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # one signal per completed reload: signals sent while one is pending coalesce
        for i in range(100):
            p.signal(signal.SIGHUP)
            wait_for(lambda: p.log().count("reload (SIGHUP)") >= i + 1, timeout=10,
                     what=f"reload {i + 1}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(got) > 50
    assert set(got) == {"h2"}, {a: got.count(a) for a in set(got)}
    assert p.stop() == 0


def test_start_failures_exit_cleanly(pki, tmp_path):
    # error paths after the engine exists (a status or a listen address in use): exit status
    # 1 naming what failed, every thread joined and everything freed -- in the sanitizer
    # build a leak or a use after free would be reported here
    from conftest import run
    c = pki / "certs"
    base = ["proxy", "server", "--target", "127.0.0.1:9", "--cert", c / "api.crt", "--key",
            c / "api.key", "--cacert", c / "ca.crt", "--allow-all"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        cases = [(["--listen", "127.0.0.1:0", "--status", taken], "--status " + taken),
                 (["--listen", taken], "--listen " + taken)]
        for extra, named in cases:
            r = run(*base, *extra, timeout=30)
            assert r.returncode == 1, (extra, r.stderr)
            assert named in r.stderr, r.stderr
            for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                assert bad not in r.stderr, r.stderr
