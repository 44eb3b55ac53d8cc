"""gRPC over HTTP/2 through both proxies, with ALPN h2 negotiated on the mTLS
hop: a real grpcio client -> meshtls proxy client -> (mTLS, ALPN h2) ->
meshtls proxy server -> a real grpcio server.  A client proxy holding a
certificate from an untrusted CA gets no answer."""
import subprocess
from concurrent import futures

import grpc
import pytest

from proxy_util import Proxy, make_pki

METHOD = "/meshtls.test.Echo/Say"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def grpc_backend():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler("meshtls.test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: b"echo:" + req,
            request_deserializer=None, response_serializer=None)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.stop()


def chain(pki, procs, backend_port, certs="certs"):
    c = pki / "certs"
    srv = Proxy("server", "--target", f"127.0.0.1:{backend_port}", "--cert", c / "api.crt",
                "--key", c / "api.key", "--cacert", c / "ca.crt", "--alpn", "h2,http/1.1",
                "--allow-uri", "spiffe://test.local/svc/web")
    procs.append(srv)
    k = pki / certs
    cli = Proxy("client", "--target", f"127.0.0.1:{srv.port}", "--cert", k / "web.crt",
                "--key", k / "web.key", "--cacert", c / "ca.crt", "--alpn", "h2",
                "--verify-spiffe-id", "spiffe://test.local/svc/api")
    procs.append(cli)
    return srv, cli


def test_grpc_through_both_proxies(pki, procs, grpc_backend):
    srv, cli = chain(pki, procs, grpc_backend)
    with grpc.insecure_channel(f"127.0.0.1:{cli.port}") as ch:
        say = ch.unary_unary(METHOD)
        for i in range(20):
            assert say(b"hi %d" % i, timeout=10) == b"echo:hi %d" % i
    assert srv.metrics()['meshtls_policy_decisions_total{decision="allow"}'] >= 1


def test_alpn_h2_is_negotiated(pki, procs, grpc_backend):
    srv, _ = chain(pki, procs, grpc_backend)
    c = pki / "certs"
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-alpn",
                        "h2", "-cert", c / "web.crt", "-cert_chain", c / "web.crt", "-key", c / "web.key", "-CAfile",
                        c / "ca.crt"], input="", capture_output=True, text=True, errors="replace",
                       timeout=30)  # the backend's binary HTTP/2 frames may reach stdout
    assert "ALPN protocol: h2" in r.stdout


def test_grpc_with_untrusted_client_certificate_fails(pki, procs, grpc_backend):
    _, cli = chain(pki, procs, grpc_backend, certs="intruder")
    with grpc.insecure_channel(f"127.0.0.1:{cli.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(METHOD)(b"hi", timeout=5)
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_grpc_survives_100_reloads(pki, procs, grpc_backend):
    """ALPN h2 is never lost across reloads under gRPC load (issue 12): every call opens a new
    connection through both proxies while the server proxy reloads 100 times (and the client
    proxy every tenth time); not one call fails."""
    import signal
    import threading
    import time
    from proxy_util import wait_for
    srv, cli = chain(pki, procs, grpc_backend)
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(results) < 5000:
            with grpc.insecure_channel(f"127.0.0.1:{cli.port}") as ch:  # a new connection
                try:
                    results.append(ch.unary_unary(METHOD)(b"x", timeout=10) == b"echo:x")
                except grpc.RpcError as e:
                    results.append(repr(e))
    t = threading.Thread(target=load)
    t.start()
    try:
        for i in range(100):
            srv.signal(signal.SIGHUP)
            if i % 10 == 0:
                cli.signal(signal.SIGHUP)
            # one signal per completed reload: signals sent while one is pending coalesce
            wait_for(lambda: srv.log().count("reload (SIGHUP)") >= i + 1, timeout=10,
                     what=f"reload {i + 1}")
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(timeout=30)
    assert len(results) > 10
    bad = [r for r in results if r is not True]
    assert not bad, f"{len(bad)} of {len(results)} calls failed: {bad[:3]}"
