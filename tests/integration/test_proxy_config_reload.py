"""A reload reads the whole configuration again (issue 12, section 2): the target, the ALPN
list and the allow rules of the --config file apply to new connections after SIGHUP or a
change of the file itself; a key that shapes the running engine (workers) is reported as
needing a restart; a broken file keeps everything in service."""
import signal
import socket
import ssl

import pytest

from proxy_util import EchoServer, Proxy, make_pki, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_ctx(pki, who, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(pki / "certs" / f"{who}.crt"), str(pki / "certs" / f"{who}.key"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def exchange(ctx, port):
    """(echoed bytes or None, negotiated ALPN)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            alpn = s.selected_alpn_protocol()
            try:
                s.sendall(b"ping")
                return s.recv(10) or None, alpn
            except (ConnectionError, ssl.SSLError):
                return None, alpn


def write_yaml(path, target, *extra):
    tmp = path.with_suffix(".tmp")
    tmp.write_text("proxy:\n" + f"  target: 127.0.0.1:{target}\n" +
                   "".join(f"  {line}\n" for line in extra))
    tmp.replace(path)  # atomically, as config management does


def test_reload_rereads_target_alpn_and_rules(pki, tmp_path):
    a, b = EchoServer(), EchoServer()
    conf = tmp_path / "proxy.yaml"
    write_yaml(conf, a.port, "allow_uri: spiffe://test.local/svc/web")
    c = pki / "certs"
    p = Proxy("server", "--cert", c / "api.crt", "--key", c / "api.key", "--cacert",
              c / "ca.crt", "--config", conf)
    try:
        web = client_ctx(pki, "web")
        assert exchange(web, p.port) == (b"ping", None)
        assert (a.connections, b.connections) == (1, 0)
        assert exchange(client_ctx(pki, "evil"), p.port)[0] is None

        # 1. the file watch sees the --config file change: new target, ALPN, rules, and a
        #    restart-only key
        write_yaml(conf, b.port, "alpn: h2", "workers: 3",
                   "allow_uri: spiffe://test.local/svc/evil")
        wait_for(lambda: "reload (file change: --config" in p.log(), timeout=15,
                 what="reload on the config file's change")
        assert "failed" not in p.log(), p.log()
        evil_h2 = client_ctx(pki, "evil", ["h2"])
        assert exchange(evil_h2, p.port) == (b"ping", "h2")
        assert (a.connections, b.connections) == (1, 1)
        assert exchange(web, p.port)[0] is None  # the rule that let web in is gone
        assert "proxy.workers changed" in p.log() and "next restart" in p.log()

        # 2. a broken file keeps the whole configuration in service, and says where
        conf.write_text("proxy:\n  target: [unclosed\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: "reload (SIGHUP) failed" in p.log(), what="failed reload")
        assert str(conf) in p.log()
        assert exchange(evil_h2, p.port) == (b"ping", "h2")
        assert (a.connections, b.connections) == (1, 2)

        # 3. a target the proxy refuses (not loopback, no --target-tls) is refused on reload
        #    as at start
        write_yaml(conf, a.port, "allow_uri: spiffe://test.local/svc/web")
        conf.write_text(conf.read_text().replace("127.0.0.1", "192.0.2.1"))
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("reload (SIGHUP) failed") >= 2, what="second failure")
        assert "not a loopback address" in p.log()
        assert exchange(evil_h2, p.port) == (b"ping", "h2")
        assert (a.connections, b.connections) == (1, 3)
        assert p.stop() == 0
    finally:
        p.stop(signal.SIGKILL)
        a.close()
        b.close()


def test_reload_switches_the_forwarding_mode(pki, tmp_path):
    # proxy.forward_identity from the file: off, then proxy-v2 after SIGHUP (the echo backend
    # sends back the PROXY v2 header the proxy put before the client's bytes), then off again
    echo = EchoServer()
    conf = tmp_path / "proxy.yaml"
    write_yaml(conf, echo.port, "allow_uri: spiffe://test.local/svc/web")
    c = pki / "certs"
    p = Proxy("server", "--cert", c / "api.crt", "--key", c / "api.key", "--cacert",
              c / "ca.crt", "--config", conf, "--no-watch")
    sig = b"\r\n\r\n\x00\r\nQUIT\n"  # the PROXY protocol v2 signature

    def received():
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as raw:
            with client_ctx(pki, "web").wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                got = b""
                while not got.endswith(b"ping"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                return got
    try:
        assert received() == b"ping"
        write_yaml(conf, echo.port, "allow_uri: spiffe://test.local/svc/web",
                   "forward_identity: proxy-v2")
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("reload (SIGHUP)") >= 1, what="reload")
        got = received()
        assert got.startswith(sig) and got.endswith(b"ping"), got[:40]
        assert b"spiffe://test.local/svc/web" in got  # the identity TLV
        write_yaml(conf, echo.port, "allow_uri: spiffe://test.local/svc/web")
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.log().count("reload (SIGHUP)") >= 2, what="second reload")
        assert received() == b"ping"
        assert "failed" not in p.log()
    finally:
        p.stop(signal.SIGKILL)
        echo.close()
