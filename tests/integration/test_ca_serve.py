"""`meshtls ca serve`: the control plane's HTTPS API (issue 10), with real peers: curl with
and without client certificates, `openssl s_client`, Python's ssl and http.client.

000's checklist on /api/peers: valid certificate 200, missing 403 "client certificate
required", plaintext HTTP 403 "TLS required" in plaintext (not a TLS alert), untrusted,
expired and revoked 403; each decision an audit event.  Bootstrap tokens (single use, also
when two servers redeem the same token at once), CSR checks against the registration,
renewal, the admin API (admin vs non-admin), the CRL."""
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import MESHTLS, read_child_log, run
from proxy_util import forge_client_cert, make_pki

TD = "test.local"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = make_pki(tmp_path_factory.mktemp("pki"))
    ca = d / "ca"
    # an administrator, a service that will be revoked, one that only bootstraps
    for svc in ("admin", "gone"):
        run("ca", "register", "--dir", ca, svc, check=True)
        run("ca", "issue", "--dir", ca, svc, "--out", d / "certs", check=True)
    run("ca", "revoke", "--dir", ca, "gone", "--reason", "keyCompromise", check=True)
    run("ca", "register", "--dir", ca, "boot", "--dns", "boot.local", "--ip", "10.1.2.3",
        check=True)
    forge_client_cert(d, d / "expired", name="web", expired=True)
    return d


class Server:
    """A running `meshtls ca serve`; .port, .status_port, .log().  `env`: extra environment
    (test_ca_serve_clock.py moves the server's clock with libfaketime); `where`: how the CA is
    named (default --dir PKI/ca; test_ca_serve_gaps.py gives --store sqlite:…)."""

    def __init__(self, pki, *args, env=None, where=None):
        self.errf = open(pki / f"serve-{time.monotonic_ns()}.log", "w+")
        where = where or ["--dir", str(pki / "ca")]
        self.proc = subprocess.Popen(
            [MESHTLS, "ca", "serve", *map(str, where), "--listen", "127.0.0.1:0",
             "--status", "127.0.0.1:0", "--admin", f"spiffe://{TD}/svc/admin", *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.errf, text=True,
            env={**os.environ, **env} if env else None)
        self.port = self.status_port = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (self.port is None or self.status_port is None):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"ca serve exited {self.proc.wait()}:\n{self.log()}")
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
            elif line.startswith("status on "):
                self.status_port = int(line.rsplit(":", 1)[1])

    def log(self):
        return read_child_log(self.errf)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.errf.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(pki):
    s = Server(pki)
    yield s
    assert s.stop() == 0


def ctx(pki, svc=None, certdir="certs"):
    c = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    if svc:
        c.load_cert_chain(str(pki / certdir / f"{svc}.crt"), str(pki / certdir / f"{svc}.key"))
    return c


def call(server, pki, method, path, body=None, svc=None, certdir="certs", headers=None,
         context=None):
    """One HTTPS request (server name localhost); returns (status, parsed JSON or bytes)."""
    c = http.client.HTTPSConnection("localhost", server.port, timeout=20,
                                    context=context or ctx(pki, svc, certdir))
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


def curl(server, pki, path, *args):
    p = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(pki / "ca" / "ca.crt"),
                        "-o", "-", "-w", "\n%{http_code}", *args,
                        f"https://localhost:{server.port}{path}"],
                       capture_output=True, text=True, timeout=30)
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


def make_csr(tmp, name, cn=None, sans=None):
    key, csr = tmp / f"{name}.key", tmp / f"{name}.csr"
    argv = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn or name}"]
    if sans:
        argv += ["-addext", "subjectAltName=" + ",".join(sans)]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return csr.read_text(), key


def token(pki, svc, ttl="10m"):
    p = run("ca", "token", "--dir", pki / "ca", svc, "--ttl", ttl, check=True)
    t = p.stdout.strip()
    assert t.startswith("mtt_") and len(t) == 47 and t not in p.stderr
    return t


def audit_lines(server, route):
    return [l for l in server.log().splitlines() if " audit " in l and f"route={route}" in l]


# ---- the server itself -----------------------------------------------------------------

def test_health_public_and_server_cert_from_own_ca(server, pki):
    assert curl(server, pki, "/healthz") == (200, "ok\n")
    assert curl(server, pki, "/readyz") == (200, "ready\n")
    # the server's certificate verifies against the CA for localhost and 127.0.0.1
    c = ctx(pki)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        with c.wrap_socket(s, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.3"


def test_plaintext_http_gets_plaintext_403(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /api/peers HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 403 "), data[:100]
    assert b"tls_required" in data


def test_peers_without_client_cert_403(server, pki):
    code, body = curl(server, pki, "/api/peers")
    assert code == 403
    err = json.loads(body)["error"]
    assert err["code"] == "client_certificate_required"
    assert "client certificate required" in err["message"]
    # openssl s_client completes the handshake without a certificate; HTTP says 403
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
                        "-CAfile", str(pki / "ca" / "ca.crt"), "-verify_return_error",
                        "-verify_hostname", "localhost", "-quiet", "-ign_eof"],
                       input="GET /api/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       capture_output=True, text=True, timeout=30)
    assert "HTTP/1.1 403" in p.stdout and "client_certificate_required" in p.stdout
    assert any("decision=deny" in l and "no client certificate" in l
               for l in audit_lines(server, "/api/peers"))


def test_peers_valid_cert_registers_and_lists(server, pki):
    code, body = curl(server, pki, "/api/peers", "--cert", str(pki / "certs" / "api.crt"),
                      "--key", str(pki / "certs" / "api.key"), "-H",
                      "Content-Type: application/json", "-d", '{"address": "10.0.0.7:8443"}')
    assert code == 200, body
    assert json.loads(body)["spiffe_id"] == f"spiffe://{TD}/svc/api"
    code, body = call(server, pki, "GET", "/api/peers", svc="web")
    assert code == 200
    peers = {p["spiffe_id"]: p for p in body["peers"]}
    assert peers[f"spiffe://{TD}/svc/api"]["address"] == "10.0.0.7:8443"
    assert any("decision=allow" in l and f"identity=spiffe://{TD}/svc/web" in l
               for l in audit_lines(server, "/api/peers"))


def test_peers_untrusted_cert_403(server, pki):
    code, body = call(server, pki, "GET", "/api/peers", svc="web", certdir="intruder")
    assert code == 403 and body["error"]["code"] == "certificate_invalid"
    assert "refused" in body["error"]["message"]


def test_peers_expired_cert_403(server, pki):
    code, body = call(server, pki, "GET", "/api/peers", svc="web", certdir="expired")
    assert code == 403 and body["error"]["code"] == "certificate_invalid"
    assert "expired" in body["error"]["message"]


def test_peers_revoked_cert_403(server, pki):
    code, body = call(server, pki, "GET", "/api/peers", svc="gone")
    assert code == 403 and body["error"]["code"] == "certificate_revoked"
    assert any("decision=deny" in l and f"identity=spiffe://{TD}/svc/gone" in l
               for l in audit_lines(server, "/api/peers"))


def test_peers_bad_bodies(server, pki):
    for body in (b"{", b"[]", {"address": ""}, {"address": 7}, {"address": "a b"},
                 {"address": "x" * 300}):
        code, resp = call(server, pki, "POST", "/api/peers", body=body, svc="api")
        assert code == 400 and resp["error"]["code"] == "bad_request", body
    # a body over the 64 KiB bound is refused from its Content-Length, before it is sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        with ctx(pki, "api").wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"POST /api/peers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 70000\r\n\r\n")
            assert t.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_stale_peers_drop_out(pki):
    s = Server(pki, "--peer-ttl", "1s")
    try:
        code, _ = call(s, pki, "POST", "/api/peers", body={"address": "10.9.9.9:1"}, svc="evil")
        assert code == 200
        code, body = call(s, pki, "GET", "/api/peers", svc="web")
        assert f"spiffe://{TD}/svc/evil" in [p["spiffe_id"] for p in body["peers"]]
        time.sleep(2.2)
        code, body = call(s, pki, "GET", "/api/peers", svc="web")
        assert code == 200
        assert f"spiffe://{TD}/svc/evil" not in [p["spiffe_id"] for p in body["peers"]]
    finally:
        assert s.stop() == 0


def test_revocation_applies_on_a_kept_alive_connection(server, pki, tmp_path):
    run("ca", "register", "--dir", pki / "ca", "short", check=True)
    run("ca", "issue", "--dir", pki / "ca", "short", "--out", tmp_path, check=True)
    c = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    c.load_cert_chain(str(tmp_path / "short.crt"), str(tmp_path / "short.key"))
    conn = http.client.HTTPSConnection("localhost", server.port, timeout=20, context=c)
    conn.request("GET", "/api/peers")
    r = conn.getresponse()
    assert r.status == 200
    r.read()
    run("ca", "revoke", "--dir", pki / "ca", "short", check=True)
    conn.request("GET", "/api/peers")  # same connection, same TLS session
    r = conn.getresponse()
    assert r.status == 403 and json.loads(r.read())["error"]["code"] == "certificate_revoked"
    conn.close()


# ---- bootstrap signing --------------------------------------------------------------------

BOOT_SANS = [f"URI:spiffe://{TD}/svc/boot", "DNS:boot.local", "IP:10.1.2.3"]


def test_sign_with_token_then_token_is_used(server, pki, tmp_path):
    t = token(pki, "boot")
    csr, key = make_csr(tmp_path, "boot", sans=BOOT_SANS)
    code, body = call(server, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
    assert code == 200, body
    assert body["service"] == "boot" and body["chain"].startswith(body["certificate"])
    (tmp_path / "boot.crt").write_text(body["chain"])
    (tmp_path / "ca.crt").write_text(body["ca"])
    v = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"),
                        "-untrusted", str(tmp_path / "boot.crt"), str(tmp_path / "boot.crt")],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr
    # the new certificate is a client certificate the API accepts
    code, _ = call(server, pki, "GET", "/api/peers", svc="boot", certdir=tmp_path.name,
                   context=_ctx_files(pki, tmp_path / "boot.crt", key))
    assert code == 200
    # single use
    code, body = call(server, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
    assert code == 403 and body["error"]["code"] == "token_used"


def _ctx_files(pki, crt, key):
    c = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    c.load_cert_chain(str(crt), str(key))
    return c


def test_sign_refusals(server, pki, tmp_path):
    csr, _ = make_csr(tmp_path, "boot", sans=BOOT_SANS)
    cases = [
        ({"token": "nope", "csr": csr}, 403, "invalid_token"),
        ({"token": "mtt_" + "A" * 43, "csr": csr}, 403, "invalid_token"),
        ({"csr": csr}, 400, "bad_request"),
        ({"token": token(pki, "boot"), "csr": "not a csr"}, 400, "bad_csr"),
    ]
    for body, status, code in cases:
        s, resp = call(server, pki, "POST", "/api/v1/sign", body=body)
        assert (s, resp["error"]["code"]) == (status, code), (body, resp)
    # expired token
    t = token(pki, "boot", ttl="1s")
    time.sleep(1.5)
    s, resp = call(server, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
    assert (s, resp["error"]["code"]) == (403, "token_expired")


@pytest.mark.parametrize("sans,cn,why", [
    ([f"URI:spiffe://{TD}/svc/api"], "boot", f"spiffe://{TD}/svc/api"),
    (["DNS:boot.local"], "boot", "no SPIFFE ID"),
    ([f"URI:spiffe://{TD}/svc/boot", "DNS:evil.example"], "boot", "evil.example"),
    ([f"URI:spiffe://{TD}/svc/boot", "IP:10.9.9.9"], "boot", "10.9.9.9"),
    ([f"URI:spiffe://{TD}/svc/boot"], "api", "CN 'api'"),
])
def test_sign_csr_mismatch_refused_with_reason(server, pki, tmp_path, sans, cn, why):
    t = token(pki, "boot")
    csr, _ = make_csr(tmp_path, "x", cn=cn, sans=sans)
    s, resp = call(server, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
    assert s == 403 and resp["error"]["code"] == "csr_mismatch"
    assert why in resp["error"]["message"]
    # the token was not spent on a refused CSR
    good, _ = make_csr(tmp_path, "good", cn="boot", sans=BOOT_SANS)
    s, resp = call(server, pki, "POST", "/api/v1/sign", body={"token": t, "csr": good})
    assert s == 200, resp


def test_token_redeemed_once_by_two_servers_at_once(server, pki, tmp_path):
    other = Server(pki)
    try:
        for _ in range(3):
            t = token(pki, "boot")
            csr, _ = make_csr(tmp_path, "race", cn="boot", sans=BOOT_SANS)
            barrier = threading.Barrier(4)

            def redeem(srv):
                barrier.wait(timeout=10)
                return call(srv, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})[0]

            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                codes = sorted(ex.map(redeem, [server, other, server, other]))
            assert codes == [200, 403, 403, 403], codes
    finally:
        assert other.stop() == 0


# ---- renewal ----------------------------------------------------------------------------

def test_renew_with_current_cert(server, pki, tmp_path):
    csr, key = make_csr(tmp_path, "web", sans=[f"URI:spiffe://{TD}/svc/web"])
    code, body = call(server, pki, "POST", "/api/v1/renew", body={"csr": csr}, svc="web")
    assert code == 200, body
    assert body["service"] == "web"
    # a CSR for another identity is refused
    csr2, _ = make_csr(tmp_path, "api", sans=[f"URI:spiffe://{TD}/svc/api"])
    code, body = call(server, pki, "POST", "/api/v1/renew", body={"csr": csr2}, svc="web")
    assert code == 403 and body["error"]["code"] == "csr_mismatch"


def test_renew_refused_revoked_expired_and_anonymous(server, pki, tmp_path):
    csr, _ = make_csr(tmp_path, "gone", sans=[f"URI:spiffe://{TD}/svc/gone"])
    code, body = call(server, pki, "POST", "/api/v1/renew", body={"csr": csr}, svc="gone")
    assert code == 403 and body["error"]["code"] == "certificate_revoked"
    code, body = call(server, pki, "POST", "/api/v1/renew", body={"csr": csr}, svc="web",
                      certdir="expired")
    assert code == 403 and body["error"]["code"] == "certificate_invalid"
    code, body = call(server, pki, "POST", "/api/v1/renew", body={"csr": csr})
    assert code == 403 and body["error"]["code"] == "client_certificate_required"


# ---- admin --------------------------------------------------------------------------------

ADMIN = "/api/admin/security/certificates"


def test_admin_only_for_admins(server, pki):
    code, body = call(server, pki, "GET", ADMIN, svc="api")
    assert code == 403 and body["error"]["code"] == "not_admin"
    code, body = call(server, pki, "POST", f"{ADMIN}/web/revoke", body={}, svc="api")
    assert code == 403
    lines = audit_lines(server, ADMIN)
    assert any("decision=deny" in l and f"spiffe://{TD}/svc/api is not an administrator" in l
               for l in lines)
    code, body = call(server, pki, "GET", ADMIN)
    assert code == 403 and body["error"]["code"] == "client_certificate_required"


def test_admin_inventory_filters_and_pages(server, pki):
    code, body = call(server, pki, "GET", f"{ADMIN}?service=api", svc="admin")
    assert code == 200 and body["certificates"]
    assert {c["service"] for c in body["certificates"]} == {"api"}
    code, body = call(server, pki, "GET", f"{ADMIN}?status=revoked", svc="admin")
    assert code == 200 and "gone" in {c["service"] for c in body["certificates"]}
    assert all(c["status"] == "revoked" and c["reason"] for c in body["certificates"])
    code, body = call(server, pki, "GET", f"{ADMIN}?limit=1", svc="admin")
    assert code == 200 and len(body["certificates"]) == 1 and body["next_offset"] == 1
    code, page2 = call(server, pki, "GET", f"{ADMIN}?limit=1&offset=1", svc="admin")
    assert page2["certificates"][0]["serial"] != body["certificates"][0]["serial"]
    code, body = call(server, pki, "GET", f"{ADMIN}?expiring_before=1", svc="admin")
    assert code == 200 and body["total"] == 0
    for q in ("status=bogus", "limit=0", "limit=x", "expiring_before=-1"):
        code, body = call(server, pki, "GET", f"{ADMIN}?{q}", svc="admin")
        assert code == 400, q


def test_admin_rotate_and_revoke_show_in_crl(server, pki):
    run("ca", "register", "--dir", pki / "ca", "victim", check=True)
    run("ca", "issue", "--dir", pki / "ca", "victim", "--out", pki / "victim", check=True)
    code, body = call(server, pki, "POST", f"{ADMIN}/victim/rotate", svc="admin")
    assert code == 200, body
    old, new = body["old_serial"], body["new_serial"]
    assert old != new
    code, body = call(server, pki, "POST", f"{ADMIN}/victim/revoke",
                      body={"reason": "keyCompromise", "replace": True}, svc="admin")
    assert code == 200, body
    assert body["revoked"] >= 1 and body["replacements"]
    code, body = call(server, pki, "POST", f"{ADMIN}/victim/revoke", body={"reason": "bogus"},
                      svc="admin")
    assert code == 400
    code, body = call(server, pki, "POST", f"{ADMIN}/nosuch/rotate", svc="admin")
    assert code == 404
    # the CRL (DER by default, PEM when asked) lists the revoked serial at once
    code, der = call(server, pki, "GET", "/crl")
    assert code == 200
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-text"], input=der,
                          capture_output=True, timeout=30).stdout.decode().lower()
    assert new.lower() in text.replace(":", "") or new.lower().lstrip("0") in text
    code, pem = call(server, pki, "GET", "/crl", headers={"Accept": "application/x-pem-file"})
    assert code == 200 and pem.startswith(b"-----BEGIN X509 CRL-----")


def test_revoke_publishes_the_crl_in_the_background(server, pki, tmp_path):
    # the revoke answers without signing the CRL (it took seconds at 100,000 entries); the
    # server's publisher re-signs it and writes the published file soon after, with no GET /crl
    out = tmp_path / "published.crl"
    run("ca", "crl", "--dir", pki / "ca", "--out", out, check=True)  # remembered from now on
    run("ca", "register", "--dir", pki / "ca", "victim2", check=True)
    run("ca", "issue", "--dir", pki / "ca", "victim2", "--out", pki / "victim2", check=True)
    serial = subprocess.run(["openssl", "x509", "-in", str(pki / "victim2" / "victim2.crt"),
                             "-noout", "-serial"], capture_output=True, text=True, timeout=30,
                            check=True).stdout.strip().split("=", 1)[1].lower()
    code, body = call(server, pki, "POST", f"{ADMIN}/victim2/revoke",
                      body={"reason": "keyCompromise", "replace": False}, svc="admin")
    assert code == 200 and body["revoked"] == 1, body

    def listed():
        text = subprocess.run(["openssl", "crl", "-in", str(out), "-noout", "-text"],
                              capture_output=True, text=True, timeout=30).stdout.lower()
        return serial in text.replace(":", "")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not listed():
        time.sleep(0.1)
    assert listed(), server.log()


# ---- the revocation feed --------------------------------------------------------------------

FEED = "/api/v1/revocations"


def test_feed_lists_gap_free_epochs_and_needs_a_cert(server, pki):
    code, body = call(server, pki, "GET", f"{FEED}?since=0", svc="web")
    assert code == 200 and body["more"] is False
    epochs = [r["epoch"] for r in body["revocations"]]
    assert epochs == list(range(1, len(epochs) + 1)) and body["epoch"] == epochs[-1]
    assert "gone" in {r["service"] for r in body["revocations"]}
    code, again = call(server, pki, "GET", f"{FEED}?since={body['epoch']}", svc="web")
    assert code == 200 and again["revocations"] == [] and again["epoch"] == body["epoch"]
    code, body = call(server, pki, "GET", FEED)
    assert code == 403 and body["error"]["code"] == "client_certificate_required"
    for q in ("since=-1", "since=x", "wait=61"):
        assert call(server, pki, "GET", f"{FEED}?{q}", svc="web")[0] == 400, q


def test_feed_long_poll_sees_a_revocation_at_another_server_within_a_second(server, pki):
    other = Server(pki)
    try:
        run("ca", "register", "--dir", pki / "ca", "feedme", check=True)
        run("ca", "issue", "--dir", pki / "ca", "feedme", "--out", pki / "feedme", check=True)
        code, body = call(other, pki, "GET", f"{FEED}?since=0", svc="web")
        since = body["epoch"]
        result = {}

        def follow():
            t0 = time.monotonic()
            result["resp"] = call(other, pki, "GET", f"{FEED}?since={since}&wait=20", svc="web")
            result["at"] = time.monotonic()
            result["t0"] = t0

        th = threading.Thread(target=follow)
        th.start()
        time.sleep(0.5)  # the follower is held: nothing newer yet
        assert "resp" not in result
        code, body = call(server, pki, "POST", f"{ADMIN}/feedme/revoke",
                          body={"reason": "keyCompromise", "replace": False}, svc="admin")
        revoked_at = time.monotonic()
        assert code == 200 and body["revoked"] == 1
        th.join(timeout=25)
        code, feed = result["resp"]
        assert code == 200
        assert [r["service"] for r in feed["revocations"]] == ["feedme"]
        assert feed["revocations"][0]["epoch"] == since + 1 and feed["epoch"] == since + 1
        assert feed["revocations"][0]["reason"] == "keyCompromise"
        assert result["at"] - revoked_at < 1.0
        # nothing newer and no wait: at once, empty
        t0 = time.monotonic()
        code, body = call(other, pki, "GET", f"{FEED}?since={since + 1}&wait=1", svc="web")
        assert code == 200 and body["revocations"] == [] and time.monotonic() - t0 >= 0.9
    finally:
        assert other.stop() == 0


# ---- OCSP ----------------------------------------------------------------------------------

def ocsp(pki, url, *args):
    ca = pki / "ca"
    p = subprocess.run(["openssl", "ocsp", "-issuer", str(ca / "intermediate.crt"), "-url", url,
                        "-CAfile", str(ca / "ca.crt"), *map(str, args)],
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_ocsp_openssl_good_revoked_unknown_nonce(server, pki):
    for url in (f"http://127.0.0.1:{server.status_port}/ocsp",
                f"https://localhost:{server.port}/ocsp"):
        rc, out = ocsp(pki, url, "-cert", pki / "certs" / "api.crt", "-resp_text")
        assert rc == 0 and "Response verify OK" in out, out
        assert "api.crt: good" in out and "OCSP Nonce" in out  # echoed
        assert "meshtls OCSP responder" in out  # delegated responder
        rc, out = ocsp(pki, url, "-cert", pki / "certs" / "gone.crt")
        assert "Response verify OK" in out and "gone.crt: revoked" in out
        assert "keyCompromise" in out
        rc, out = ocsp(pki, url, "-serial", "0x1234")
        assert "Response verify OK" in out and "0x1234: unknown" in out
        # another CA's certificate: not ours, unknown
        rc, out = ocsp(pki, url, "-cert", pki / "intruder" / "web.crt")
        assert "web.crt: unknown" in out, out


def test_ocsp_get_rfc5019_and_malformed(server, pki, tmp_path):
    import base64
    import urllib.parse
    req = tmp_path / "req.der"
    subprocess.run(["openssl", "ocsp", "-issuer", str(pki / "ca" / "intermediate.crt"), "-cert",
                    str(pki / "certs" / "web.crt"), "-no_nonce", "-reqout", str(req)],
                   check=True, capture_output=True, timeout=30)
    b64 = base64.b64encode(req.read_bytes()).decode()
    # RFC 5019 URL-encodes the base64; the HTTP layer refuses an encoded '/' (%2F) in a
    # path, so '/' goes raw (as many clients send it) or as base64url
    forms = [b64.translate(str.maketrans("+/", "-_"))]
    if not b64.rstrip("=").endswith("/") and "//" not in b64 and not b64.startswith("/"):
        # (an empty path segment matches no route: such a request goes as base64url)
        forms.append(urllib.parse.quote(b64, safe="/"))
    for enc in forms:
        code, der = call(server, pki, "GET", f"/ocsp/{enc}")
        assert code == 200, (enc, der)
        (tmp_path / "resp.der").write_bytes(der)
        p = subprocess.run(["openssl", "ocsp", "-respin", str(tmp_path / "resp.der"), "-issuer",
                            str(pki / "ca" / "intermediate.crt"), "-cert",
                            str(pki / "certs" / "web.crt"), "-CAfile",
                            str(pki / "ca" / "ca.crt")],
                           capture_output=True, text=True, timeout=30)
        assert "Response verify OK" in p.stdout + p.stderr and "web.crt: good" in p.stdout
    # garbage: an OCSP malformedRequest (HTTP 200, RFC 6960), or 400 for bad base64
    code, der = call(server, pki, "POST", "/ocsp", body=b"\x30\x03\x02\x01\x01",
                     headers={"Content-Type": "application/ocsp-request"})
    assert code == 200 and der == bytes.fromhex("30030a0101")
    code, _ = call(server, pki, "GET", "/ocsp/%21%21%21")
    assert code == 400


def test_metrics_with_002_names(server, pki):
    call(server, pki, "GET", "/api/peers", svc="api")
    call(server, pki, "GET", "/api/peers")
    conn = http.client.HTTPConnection("127.0.0.1", server.status_port, timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    assert r.status == 200
    for name in ("meshtls_cert_issuances_total ", "meshtls_cert_rotations_total ",
                 "meshtls_cert_revocations_total ", 'meshtls_cert_days_until_expiry{service="api"}',
                 'meshtls_ca_token_redemptions_total{result="success"}',
                 'meshtls_ca_peers{state="alive"}', "meshtls_ca_crl_age_seconds ",
                 "meshtls_ca_crl_next_update_seconds ", "meshtls_ca_intermediate_expiry_seconds",
                 "meshtls_ca_root_expiry_seconds", "meshtls_ca_revocation_epoch"):
        assert name in text, name
    me = f"spiffe://{TD}/svc/meshtls-ca"
    assert (f'meshtls_handshake_total{{from="spiffe://{TD}/svc/api",to="{me}",'
            f'result="success"}}') in text
    assert f'meshtls_handshake_total{{from="anonymous",to="{me}",result="no_certificate"}}' in text


# ---- the lifecycle worker -------------------------------------------------------------------

def _active(pki, svc):
    rows = json.loads(run("ca", "list", "--dir", pki / "ca", "--json", check=True).stdout)
    rows = rows if isinstance(rows, list) else rows.get("certificates", rows)
    return [r for r in rows if r["service"] == svc and r["status"] == "active"]


def test_lifecycle_worker_rotates_once_per_interval_across_two_servers(tmp_path):
    pki = make_pki(tmp_path)
    run("ca", "register", "--dir", pki / "ca", "due", check=True)
    run("ca", "issue", "--dir", pki / "ca", "due", "--out", pki / "due", "--days", "2",
        check=True)
    old = _active(pki, "due")
    assert len(old) == 1
    a = Server(pki, "--lifecycle-interval", "1s")
    b = Server(pki, "--lifecycle-interval", "1s")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = _active(pki, "due")
            if now and now[0]["serial"] != old[0]["serial"]:
                break
            time.sleep(0.2)
        new = _active(pki, "due")
        assert new and new[0]["serial"] != old[0]["serial"], new
        t0 = time.monotonic()
        time.sleep(3.2)
        runs = [l for s in (a, b) for l in s.log().splitlines() if " lifecycle " in l]
        rotated = [l for s in (a, b) for l in s.log().splitlines()
                   if " rotate " in l and "service=due" in l]
        # one rotation of `due` in all (idempotent), and about one run per interval in all
        # (a lease in the store), not one per server per interval
        assert len(rotated) == 1, rotated
        elapsed = time.monotonic() - t0 + 15
        assert 2 <= len(runs) <= elapsed + 2, runs
        # runs (either server) start at least the lease (0.9 interval) apart; the event is
        # logged at a run's end, and a run takes a variable time, hence the slack
        import datetime
        at = sorted(datetime.datetime.strptime(l[:23], "%Y-%m-%dT%H:%M:%S.%f") for l in runs)
        gaps = [(y - x).total_seconds() for x, y in zip(at, at[1:])]
        assert all(g >= 0.5 for g in gaps), gaps
        assert _active(pki, "due")[0]["serial"] == new[0]["serial"]
        # the rotated files are where the old ones were
        assert (pki / "due" / "due.crt").exists()
    finally:
        assert a.stop() == 0 and b.stop() == 0


def _metric(server, name):
    conn = http.client.HTTPConnection("127.0.0.1", server.status_port, timeout=10)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_ocsp_cache_serves_repeats_and_a_revocation_invalidates_it(server, pki, tmp_path):
    run("ca", "register", "--dir", pki / "ca", "cached", check=True)
    run("ca", "issue", "--dir", pki / "ca", "cached", "--out", tmp_path, check=True)
    req = tmp_path / "req.der"
    subprocess.run(["openssl", "ocsp", "-issuer", str(pki / "ca" / "intermediate.crt"), "-cert",
                    str(tmp_path / "cached.crt"), "-no_nonce", "-reqout", str(req)],
                   check=True, capture_output=True, timeout=30)
    hdr = {"Content-Type": "application/ocsp-request"}

    def status():
        code, der = call(server, pki, "POST", "/ocsp", body=req.read_bytes(), headers=hdr)
        assert code == 200
        (tmp_path / "resp.der").write_bytes(der)
        p = subprocess.run(["openssl", "ocsp", "-respin", str(tmp_path / "resp.der"), "-issuer",
                            str(pki / "ca" / "intermediate.crt"), "-cert",
                            str(tmp_path / "cached.crt"), "-CAfile", str(pki / "ca" / "ca.crt")],
                           capture_output=True, text=True, timeout=30)
        assert "Response verify OK" in p.stdout + p.stderr
        return p.stdout

    hits = _metric(server, "meshtls_ca_ocsp_cache_hits_total")
    assert "cached.crt: good" in status()
    assert "cached.crt: good" in status()
    assert _metric(server, "meshtls_ca_ocsp_cache_hits_total") == hits + 1
    code, _ = call(server, pki, "POST", f"{ADMIN}/cached/revoke",
                   body={"reason": "keyCompromise", "replace": False}, svc="admin")
    assert code == 200
    assert "cached.crt: revoked" in status()  # at once: the cached "good" is gone


def test_control_plane_demo_script():
    from conftest import SOURCE_DIR
    p = subprocess.run([str(SOURCE_DIR / "scripts" / "demo-control-plane.sh")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MESHTLS_BIN": MESHTLS})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "demo: every step as expected" in p.stdout


def test_check_and_bad_options(pki, tmp_path):
    ok = run("ca", "serve", "--dir", pki / "ca", "--listen", "127.0.0.1:0", "--check")
    assert ok.returncode == 0 and "configuration OK" in ok.stdout
    cases = [
        (["--dir", tmp_path / "nope", "--listen", "127.0.0.1:0", "--check"], 1, "ca init"),
        (["--dir", pki / "ca", "--listen", "bad host:x", "--check"], 1, "bad host:x"),
        (["--dir", pki / "ca", "--listen", "127.0.0.1:0", "--days", "10"], 2, "--rotate-within"),
        (["--dir", pki / "ca"], 2, "--listen ADDR is required"),
        (["--dir", pki / "ca", "--listen", ":0", "--admin", "admin"], 2, "SPIFFE ID"),
        (["--store", "postgres://u:s3cret@h/db", "--listen", ":0"], 2, "give --dir DIR beside"),
    ]
    for args, rc, text in cases:
        p = run("ca", "serve", *args)
        assert p.returncode == rc and text in p.stderr, (args, p.stderr)
        assert "s3cret" not in p.stderr
    p = run("ca", "token", "--dir", pki / "ca", "nosuch")
    assert p.returncode == 1 and "nosuch" in p.stderr and not p.stdout


def _raw_tls(server, pki, data, svc=None):
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        with ctx(pki, svc).wrap_socket(s, server_hostname="localhost") as t:
            try:
                t.sendall(data)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass  # the server answered and closed before taking everything: read it
            out = b""
            while True:
                try:
                    chunk = t.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not chunk:
                    break
                out += chunk
            return out


def test_malformed_and_oversized_requests(server, pki):
    cases = [
        (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /api/peers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
         b"HTTP/1.1 431 "),
        (b"POST /api/v1/sign HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\nabc", b"HTTP/1.1 400 "),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 404 "),
        (b"DELETE /api/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 405 "),
    ]
    for data, want in cases:
        out = _raw_tls(server, pki, data, svc="api")
        assert out.startswith(want), (data[:40], out[:200])
        assert b"application/json" in out.split(b"\r\n\r\n")[0]
    # sign: wrong JSON types and a body that is not JSON
    for body in ({"token": 1, "csr": "x"}, {"token": "x"}, b"not json", b'{"token":"a","token":"b"}'):
        code, resp = call(server, pki, "POST", "/api/v1/sign", body=body)
        assert code == 400 and resp["error"]["code"] == "bad_request", body
    # keep-alive: several requests on one TLS connection
    c = http.client.HTTPSConnection("localhost", server.port, timeout=20, context=ctx(pki, "api"))
    for _ in range(5):
        c.request("GET", "/api/peers")
        r = c.getresponse()
        assert r.status == 200
        r.read()
    c.close()


def test_config_file_and_environment(pki, tmp_path):
    y = tmp_path / "serve.yaml"
    y.write_text(f"ca_serve:\n  dir: {pki / 'ca'}\n  listen: 127.0.0.1:0\n"
                 f"  admin: spiffe://{TD}/svc/admin\n  lifecycle_interval: 1h\n")
    assert run("ca", "serve", "--config", y, "--check").returncode == 0
    # the environment wins over the file, a flag over the environment
    env = {"MESHTLS_CA_SERVE_LISTEN": "bad host:1"}
    p = run("ca", "serve", "--config", y, "--check", env=env)
    assert p.returncode == 1 and "bad host:1" in p.stderr
    assert run("ca", "serve", "--config", y, "--listen", "127.0.0.1:0", "--check",
               env=env).returncode == 0
    p = run("ca", "serve", "--dir", pki / "ca", "--listen", ":0", "--check",
            env={"MESHTLS_CA_SERVE_DAYS": "abc"})
    assert p.returncode == 2 and "MESHTLS_CA_SERVE_DAYS" in p.stderr
    (tmp_path / "bad.yaml").write_text("ca_serve:\n  nope: 1\n")
    p = run("ca", "serve", "--config", tmp_path / "bad.yaml", "--check")
    assert p.returncode == 2 and "bad.yaml:2" in p.stderr and "ca_serve.nope" in p.stderr
