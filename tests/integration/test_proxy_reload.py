"""Rotation without downtime: continuous requests through `meshtls proxy
server` while its certificate is re-issued ten times (SIGHUP and the file
watch), with zero failed requests; a broken certificate on reload keeps the
old one in service; revoked and expired clients are refused."""
import datetime
import json
import shutil
import signal
import socket
import ssl
import threading
import time

import pytest

from conftest import run
from proxy_util import OPTIMIZATIONS_OFF, EchoServer, Proxy, make_pki, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def echo():
    s = EchoServer()
    yield s
    s.close()


def client_ctx(pki, who="web", certdir=None):
    d = certdir or pki / "certs"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(d / f"{who}.crt"), str(d / f"{who}.key"))
    return ctx


def one_request(ctx, port):
    """A full connection: handshake, 1 KiB echo; returns the server cert serial."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            payload = b"x" * 1024
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(4096)
                if not chunk:
                    raise AssertionError("connection closed early")
                got += chunk
            assert got == payload
            der = s.getpeercert(binary_form=True)
            return __import__("hashlib").sha256(der).hexdigest()


def serial_of(path):
    return json.loads(run("cert", "inspect", "--json", path, check=True).stdout)[0]["serial"]


@pytest.mark.parametrize("how", ["sighup", "watch"])
def test_ten_rotations_zero_failures(pki, echo, tmp_path, how):
    ca = tmp_path / "ca"
    shutil.copytree(pki / "ca", ca)
    live = tmp_path / "live"
    run("ca", "issue", "--dir", ca, "api", "--out", live, check=True)
    extra = ["--no-watch"] if how == "sighup" else []
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", live / "api.crt",
              "--key", live / "api.key", "--cacert", live / "ca.crt", "--allow-all",
              "--workers", "2", *extra)
    ctx = client_ctx(pki)
    stop = threading.Event()
    results = {"ok": 0, "fail": 0, "errors": [], "certs": set()}

    def load():
        while not stop.is_set():
            try:
                results["certs"].add(one_request(ctx, p.port))
                results["ok"] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                results["fail"] += 1
                results["errors"].append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for i in range(10):
            before = p.metrics()['meshtls_reloads_total{result="success"}']
            run("ca", "issue", "--dir", ca, "api", "--out", live, check=True)
            if how == "sighup":
                p.signal(signal.SIGHUP)
            wait_for(lambda: p.metrics()['meshtls_reloads_total{result="success"}'] > before,
                     timeout=15, what=f"reload {i + 1}")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        p.stop()
    assert results["fail"] == 0, results["errors"][:5]
    assert results["ok"] > 20
    assert len(results["certs"]) >= 5, "new handshakes should see the new certificates"


def test_broken_certificate_keeps_the_old_one(pki, echo, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(pki / "certs", live)
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", live / "api.crt",
              "--key", live / "api.key", "--cacert", live / "ca.crt", "--allow-all", "--no-watch")
    try:
        ctx = client_ctx(pki)
        first = one_request(ctx, p.port)
        (live / "api.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n"
                                      "-----END CERTIFICATE-----\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.metrics()['meshtls_reloads_total{result="failure"}'] == 1,
                 what="failed reload")
        assert "keeping the current certificate" in p.log()
        assert str(live / "api.crt") in p.log()
        assert one_request(ctx, p.port) == first
    finally:
        p.stop()


def test_revoked_client_refused_via_crl_reload(pki, echo, tmp_path):
    ca = tmp_path / "ca"
    shutil.copytree(pki / "ca", ca)
    fresh = tmp_path / "fresh"
    run("ca", "issue", "--dir", ca, "web", "--out", fresh, check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt",
              "--key", c / "api.key", "--cacert", c / "ca.crt", "--crl", crl, "--allow-all")
    try:
        ctx = client_ctx(pki, "web", fresh)
        one_request(ctx, p.port)
        run("ca", "revoke", "--dir", ca, "--serial", serial_of(fresh / "web.crt"), check=True)
        before = p.metrics()['meshtls_reloads_total{result="success"}']
        run("ca", "crl", "--dir", ca, "--out", crl, check=True)  # the file watch reloads
        wait_for(lambda: p.metrics()['meshtls_reloads_total{result="success"}'] > before,
                 what="CRL reload")
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, AssertionError)):
            one_request(ctx, p.port)
        wait_for(lambda: p.metrics()['meshtls_tls_handshake_errors_total{reason="revoked"}'] == 1,
                 what="revoked metric")
    finally:
        p.stop()


def resume(ctx, port, session=None):
    """One echo over a connection resuming `session`; returns (reused, new session)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"hi")
            assert s.recv(10) == b"hi"
            return s.session_reused, s.session


@pytest.mark.skipif(OPTIMIZATIONS_OFF, reason="needs the session cache")
def test_session_cache_survives_rotation_not_trust_change(pki, echo, tmp_path):
    ca = tmp_path / "ca"
    shutil.copytree(pki / "ca", ca)
    live = tmp_path / "live"
    run("ca", "issue", "--dir", ca, "api", "--out", live, check=True)
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", live / "api.crt",
              "--key", live / "api.key", "--cacert", live / "ca.crt", "--allow-all",
              "--no-watch")
    try:
        ctx = client_ctx(pki)
        reused, sess = resume(ctx, p.port)
        assert not reused
        reused, _ = resume(ctx, p.port, sess)
        assert reused, "second connection should resume"

        def reload_and_wait():
            before = p.metrics()['meshtls_reloads_total{result="success"}']
            p.signal(signal.SIGHUP)
            wait_for(lambda: p.metrics()['meshtls_reloads_total{result="success"}'] > before,
                     what="reload")

        # our own certificate rotates: sessions survive
        run("ca", "issue", "--dir", ca, "api", "--out", live, check=True)
        reload_and_wait()
        reused, _ = resume(ctx, p.port, sess)
        assert reused, "rotation of the proxy's certificate must not force full handshakes"

        # trust changes (another CA joins the bundle): no session outlives it
        (live / "ca.crt").write_bytes((pki / "certs" / "ca.crt").read_bytes() +
                                      (pki / "intruder" / "ca.crt").read_bytes())
        reload_and_wait()
        reused, sess2 = resume(ctx, p.port, sess)
        assert not reused, "a session must not outlive the trust it was verified under"
        reused, _ = resume(ctx, p.port, sess2)
        assert reused
    finally:
        p.stop()


def test_crl_change_invalidates_sessions_and_revoked_cannot_resume(pki, echo, tmp_path):
    ca = tmp_path / "ca"
    shutil.copytree(pki / "ca", ca)
    fresh = tmp_path / "fresh"
    run("ca", "issue", "--dir", ca, "web", "--out", fresh, check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--crl", crl, "--allow-all", "--no-watch")
    try:
        ctx = client_ctx(pki, "web", fresh)
        _, sess = resume(ctx, p.port)
        assert resume(ctx, p.port, sess)[0]
        run("ca", "revoke", "--dir", ca, "--serial", serial_of(fresh / "web.crt"), check=True)
        run("ca", "crl", "--dir", ca, "--out", crl, check=True)
        before = p.metrics()['meshtls_reloads_total{result="success"}']
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.metrics()['meshtls_reloads_total{result="success"}'] > before,
                 what="reload")
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, AssertionError)):
            resume(ctx, p.port, sess)  # neither resumed nor accepted in full
    finally:
        p.stop()


@pytest.mark.parametrize("flags,resumes", [(["--session-cache-size", "0"], True),
                                           (["--tickets", "0"], False)])
def test_ticket_settings(pki, echo, flags, resumes):
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--allow-all", *flags)
    try:
        ctx = client_ctx(pki)
        _, sess = resume(ctx, p.port)
        assert resume(ctx, p.port, sess)[0] == resumes
    finally:
        p.stop()


@pytest.mark.skipif(OPTIMIZATIONS_OFF, reason="needs the verification cache")
def test_verify_cache_hits_and_never_outlives_a_crl_change(pki, echo, tmp_path):
    """A chain verified once is not verified again; a revoked certificate is refused
    while its chain sits in the cache, because a new CRL empties it."""
    ca = tmp_path / "ca"
    shutil.copytree(pki / "ca", ca)
    fresh = tmp_path / "fresh"
    run("ca", "issue", "--dir", ca, "web", "--out", fresh, check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--crl", crl, "--allow-all", "--no-watch",
              "--session-cache-size", "0", "--tickets", "0")  # full handshakes only
    try:
        ctx = client_ctx(pki, "web", fresh)
        for _ in range(3):
            one_request(ctx, p.port)
        m = p.metrics()
        assert m['meshtls_verify_cache_lookups_total{result="miss"}'] == 1
        assert m['meshtls_verify_cache_lookups_total{result="hit"}'] == 2
        run("ca", "revoke", "--dir", ca, "--serial", serial_of(fresh / "web.crt"), check=True)
        run("ca", "crl", "--dir", ca, "--out", crl, check=True)
        before = m['meshtls_reloads_total{result="success"}']
        p.signal(signal.SIGHUP)
        wait_for(lambda: p.metrics()['meshtls_reloads_total{result="success"}'] > before,
                 what="reload")
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, AssertionError)):
            one_request(ctx, p.port)
        wait_for(lambda: p.metrics()['meshtls_tls_handshake_errors_total{reason="revoked"}'] == 1,
                 what="revoked metric")
        # an unrelated, valid client is verified afresh under the new CRL, then cached again
        ok_ctx = client_ctx(pki)
        one_request(ok_ctx, p.port)
        one_request(ok_ctx, p.port)
        m = p.metrics()
        assert m['meshtls_verify_cache_lookups_total{result="hit"}'] == 3
    finally:
        p.stop()
