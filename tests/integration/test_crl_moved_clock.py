"""Issue 9 section 2, with the clock really moved (libfaketime, for the proxy only): what a
proxy run with `--crl` does once the CRLs `meshtls ca crl` wrote pass their nextUpdate --
the intermediate's after 7 days, the root's after a year.  The chosen behaviour: the last
CRL still decides (a certificate it lists stays refused, any other is let in), loudly
(a warning naming the late CRL, meshtls_crl_stale, one negative
meshtls_crl_next_update_seconds{issuer} per late CRL).  Leaves are issued for 500 days so
that only the CRLs age."""
import signal
import socket
import ssl

import pytest

from conftest import FAKETIME, faketime_env, run
from proxy_util import EchoServer, Proxy, wait_for

pytestmark = pytest.mark.skipif(FAKETIME is None,
                                reason="libfaketime missing: scripts/install-deps.sh installs it")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = d / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "clock.test", check=True)
    run("ca", "register", "--dir", ca, "api", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    for svc in ("web", "evil"):
        run("ca", "register", "--dir", ca, svc, check=True)
    for svc in ("api", "web", "evil"):
        run("ca", "issue", "--dir", ca, svc, "--days", "500", "--out", d / "certs", check=True)
    run("ca", "revoke", "--dir", ca, "web", "--reason", "keyCompromise", check=True)
    run("ca", "crl", "--dir", ca, "--out", d / "crl.pem", check=True)
    return d


def attempt(pki, who, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c = pki / "certs"
    ctx.load_verify_locations(str(c / "ca.crt"))
    ctx.load_cert_chain(str(c / f"{who}.crt"), str(c / f"{who}.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping\n")
                return s.recv(10)
    except (ssl.SSLError, OSError):
        return b""


@pytest.mark.parametrize("days,stale", [(0, 0), (8, 1), (370, 2)])
def test_crls_past_next_update_with_the_clock_moved(pki, days, stale):
    echo = EchoServer()
    c = pki / "certs"
    env = faketime_env(FAKETIME=f"+{days}d")
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt",
              "--key", c / "api.key", "--cacert", c / "ca.crt", "--allow-all", "--crl",
              pki / "crl.pem", env=env)
    try:
        # the client (this process) runs on the real clock; the proxy on the moved one
        assert attempt(pki, "evil", p.port) == b"ping\n", p.log()
        assert attempt(pki, "web", p.port) == b"", p.log()  # revoked stays refused
        wait_for(lambda: p.metrics()['meshtls_tls_handshake_errors_total{reason="revoked"}']
                 == 1, what="revoked counted")
        m = p.metrics()
        assert m["meshtls_crl_stale"] == stale, m
        gauges = [v for k, v in m.items() if k.startswith("meshtls_crl_next_update_seconds{")]
        assert len(gauges) == 2 and sum(1 for v in gauges if v < 0) == stale, gauges
        if stale:
            assert "passed its nextUpdate" in p.log() and "meshtls ca" in p.log()
        else:
            assert "passed its nextUpdate" not in p.log()
        assert p.stop(signal.SIGTERM) == 0
    finally:
        p.stop(signal.SIGKILL)
        echo.close()
