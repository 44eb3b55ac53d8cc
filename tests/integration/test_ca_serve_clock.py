"""`meshtls ca serve`'s lifecycle worker with a moved clock (issue 10 sections 3 and 6): the
server runs under libfaketime 80 days ahead, so certificates issued today with 90 days come
within the 14-day window.  One run rotates them, publishes a fresh CRL, drops the expired
bootstrap token and the stale peer; the runs after it change nothing (idempotent).

The clock is moved for the server only (LD_PRELOAD of Debian's libfaketime, `faketime` in
scripts/install-deps.sh); the tests and the `meshtls ca` commands keep the real time, so the
server's own certificate (issued at its start, 80 days ahead) is not yet valid for them: the
clients here do not verify it (what is tested is the worker, not the handshake).

The tests below move the clock while the server runs (`movable`: libfaketime reads the offset
from a file the test rewrites): cached OCSP answers are signed again past the 5-minute cap,
long before their nextUpdate; the server's own certificate is renewed by the worker and
presented to new connections without a restart."""
import datetime
import http.client
import json
import socket
import sqlite3
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from conftest import FAKETIME, faketime_env, run
from proxy_util import make_pki
from test_ca_serve import TD, Server, _metric, call, make_csr, token

pytestmark = pytest.mark.skipif(FAKETIME is None,
                                reason="libfaketime missing: scripts/install-deps.sh installs it")
AHEAD_DAYS = 80


def moved(days):
    """Environment running a child `days` ahead; monotonic time stays real (intervals)."""
    return faketime_env(FAKETIME=f"+{days}d")


def active(ca, svc):
    rows = json.loads(run("ca", "list", "--dir", ca, "--json", check=True).stdout)
    return [r for r in rows if r["service"] == svc and r["status"] == "active"]


def rows(ca, sql):
    with sqlite3.connect(f"file:{ca / 'meshtls.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


def unverified(pki, svc=None):
    """A client context with our certificate that does not check the server's (see above)."""
    c = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if svc:
        c.load_cert_chain(str(pki / "certs" / f"{svc}.crt"), str(pki / "certs" / f"{svc}.key"))
    return c


def events(server, name):
    return [l for l in server.log().splitlines() if f" {name} " in l]


def test_worker_with_a_moved_clock_rotates_publishes_sweeps_once(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    old_web = active(ca, "web")[0]["serial"]
    # a registered peer and an unused token, both made in real time
    s = Server(pki, "--lifecycle-interval", "off", "--peer-ttl", "60s")
    try:
        code, _ = call(s, pki, "POST", "/api/peers", body={"address": "10.0.0.7:8443"}, svc="web")
        assert code == 200
    finally:
        assert s.stop() == 0
    token(pki, "evil", ttl="10m")
    assert len(rows(ca, "SELECT * FROM serve_peers")) == 1
    assert len(rows(ca, "SELECT * FROM serve_tokens")) == 1

    s = Server(pki, "--lifecycle-interval", "1s", env=moved(AHEAD_DAYS))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and active(ca, "web")[0]["serial"] == old_web:
            time.sleep(0.2)
        new = active(ca, "web")[0]
        assert new["serial"] != old_web, s.log()
        # issued on the moved clock: valid 90 days from 80 days ahead
        real = datetime.datetime.now(datetime.timezone.utc)
        end = datetime.datetime.strptime(new["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert end - real > datetime.timedelta(days=AHEAD_DAYS + 80), new
        # the rotated files are where `ca issue` put the old ones
        leaf = x509.load_pem_x509_certificate((pki / "certs" / "web.crt").read_bytes())
        assert format(leaf.serial_number, "x") == new["serial"]
        # a fresh CRL, made on the moved clock
        code, der = call(s, pki, "GET", "/crl", context=unverified(pki))
        assert code == 200
        crl = x509.load_der_x509_crl(der)
        made = crl.last_update.replace(tzinfo=datetime.timezone.utc)  # naive UTC
        assert made - real > datetime.timedelta(days=AHEAD_DAYS - 1), made
        # the token (10 minutes) and the peer (60 s) are long expired 80 days ahead: swept
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (rows(ca, "SELECT * FROM serve_tokens") or
                                               rows(ca, "SELECT * FROM serve_peers")):
            time.sleep(0.2)
        assert rows(ca, "SELECT * FROM serve_tokens") == []
        assert rows(ca, "SELECT * FROM serve_peers") == []
        # the renewed certificate talks to the server ahead of time (it is 80 days younger)
        code, body = call(s, pki, "GET", "/api/peers", svc="web", context=unverified(pki, "web"))
        assert code == 200 and body["peers"] == [], body
        # idempotent: two more runs rotate nothing more
        runs = len(events(s, "lifecycle"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(events(s, "lifecycle")) < runs + 2:
            time.sleep(0.2)
        assert len(events(s, "lifecycle")) >= runs + 2, s.log()
        assert active(ca, "web")[0]["serial"] == new["serial"]
        rotated = [l for l in events(s, "rotate") if "service=web" in l]
        assert len(rotated) == 1, rotated
        last = events(s, "lifecycle")[-1]
        assert "rotated=0" in last, last
    finally:
        assert s.stop() == 0


# ---- a clock moved while the server runs ---------------------------------------------------

def movable(tmp_path, offset="+0"):
    """Environment whose clock the test moves while the child runs: libfaketime re-reads
    the offset from a file at every call (FAKETIME_NO_CACHE); monotonic time stays real."""
    f = tmp_path / "faketime.rc"
    f.write_text(offset + "\n")
    return f, faketime_env(FAKETIME_TIMESTAMP_FILE=str(f), FAKETIME_NO_CACHE="1")


def test_cached_ocsp_responses_are_refreshed_before_they_go_stale(tmp_path):
    pki = make_pki(tmp_path)
    leaf = x509.load_pem_x509_certificate((pki / "certs" / "web.crt").read_bytes())
    inter = x509.load_pem_x509_certificate((pki / "ca" / "intermediate.crt").read_bytes())
    req = ocsp.OCSPRequestBuilder().add_certificate(leaf, inter, hashes.SHA1()).build()
    der_req = req.public_bytes(serialization.Encoding.DER)
    clock, env = movable(tmp_path)
    s = Server(pki, "--lifecycle-interval", "off", env=env)

    def ask():
        conn = http.client.HTTPConnection("127.0.0.1", s.status_port, timeout=10)
        conn.request("POST", "/ocsp", body=der_req,
                     headers={"Content-Type": "application/ocsp-request"})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200
        resp = ocsp.load_der_ocsp_response(body)
        assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
        utc = datetime.timezone.utc
        return resp.this_update.replace(tzinfo=utc), resp.next_update.replace(tzinfo=utc)

    def served_now(offset):
        return datetime.datetime.now(datetime.timezone.utc) + offset

    try:
        hits = _metric(s, "meshtls_ca_ocsp_cache_hits_total")
        first = ask()
        assert ask() == first  # the cached answer
        assert _metric(s, "meshtls_ca_ocsp_cache_hits_total") == hits + 1
        # 4 minutes on: still the cached answer, still far from its nextUpdate
        clock.write_text("+240\n")
        assert ask() == first
        assert _metric(s, "meshtls_ca_ocsp_cache_hits_total") == hits + 2
        left = first[1] - served_now(datetime.timedelta(seconds=240))
        assert left > datetime.timedelta(minutes=50), left
        # past the 5-minute cap: signed again on the moved clock, not served from the cache
        clock.write_text("+310\n")
        again = ask()
        assert again[0] - first[0] >= datetime.timedelta(seconds=300), (first, again)
        assert _metric(s, "meshtls_ca_ocsp_cache_hits_total") == hits + 2
        # 50 minutes on (the first answer had 10 minutes left): what is served is fresh
        clock.write_text("+3000\n")
        late = ask()
        now = served_now(datetime.timedelta(seconds=3000))
        assert late[0] > first[0] + datetime.timedelta(minutes=45), (first, late)
        assert late[1] - now > datetime.timedelta(minutes=50), (late, now)
    finally:
        assert s.stop() == 0


def served_serial(s, pki, svc="web"):
    """The serial of the certificate the server presents (not verified: see the top)."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        with unverified(pki, svc).wrap_socket(raw, server_hostname="localhost") as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def test_server_renews_its_own_certificate_while_running(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    clock, env = movable(tmp_path)
    s = Server(pki, "--lifecycle-interval", "1s", env=env)
    try:
        # at the start: a certificate for the server from its own CA (call() verifies it)
        first = served_serial(s, pki)
        code, _ = call(s, pki, "GET", "/api/peers", svc="web")
        assert code == 200
        assert active(ca, "meshtls-ca")[0]["serial"] == format(first.serial_number, "x")
        # a kept-alive connection from before the renewal
        kept = http.client.HTTPSConnection("localhost", s.port, timeout=20,
                                           context=unverified(pki, "web"))
        kept.request("GET", "/api/peers")
        r = kept.getresponse()
        assert r.status == 200
        r.read()
        # 80 days on, the server's certificate is within the 14-day window: the worker
        # renews it and the server presents the new one to new connections, no restart
        clock.write_text(f"+{AHEAD_DAYS}d\n")
        deadline = time.monotonic() + 30
        now = first
        while time.monotonic() < deadline and now.serial_number == first.serial_number:
            time.sleep(0.3)
            now = served_serial(s, pki)
        assert now.serial_number != first.serial_number, s.log()
        assert active(ca, "meshtls-ca")[0]["serial"] == format(now.serial_number, "x")
        assert now.issuer == first.issuer and now.subject == first.subject
        san = now.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        # issued on the moved clock, for the server's usual lifetime
        real = datetime.datetime.now(datetime.timezone.utc)
        nb = now.not_valid_before.replace(tzinfo=datetime.timezone.utc)
        assert nb - real > datetime.timedelta(days=AHEAD_DAYS - 1), nb
        assert [l for l in events(s, "rotate") if "service=meshtls-ca" in l], s.log()
        # clients keep connecting: a new connection with the (renewed) client certificate,
        # and the one kept alive from before
        code, _ = call(s, pki, "GET", "/api/peers", svc="web", context=unverified(pki, "web"))
        assert code == 200
        kept.request("GET", "/api/peers")
        r = kept.getresponse()
        assert r.status == 200
        r.read()
        kept.close()
        # once renewed, later runs leave it alone (the new one is 90 days from the moved now)
        runs = len(events(s, "lifecycle"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(events(s, "lifecycle")) < runs + 2:
            time.sleep(0.2)
        assert served_serial(s, pki).serial_number == now.serial_number
    finally:
        assert s.stop() == 0


# ---- what the worker cannot rotate is flagged ------------------------------------------------

ADMIN_LIST = "/api/admin/security/certificates"


def test_worker_flags_what_only_its_holder_can_renew(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    run("ca", "register", "--dir", ca, "admin", check=True)
    run("ca", "issue", "--dir", ca, "admin", "--out", pki / "certs", check=True)
    run("ca", "register", "--dir", ca, "boot", check=True)
    run("ca", "register", "--dir", ca, "kept", check=True)
    # boot bootstraps through the API (its key stays with it; it took the certificate from
    # the answer); kept was issued from a CSR by the operator into a directory it reads
    s = Server(pki, "--lifecycle-interval", "off")
    try:
        csr, key = make_csr(tmp_path, "boot", sans=[f"URI:spiffe://{TD}/svc/boot"])
        code, body = call(s, pki, "POST", "/api/v1/sign",
                          body={"token": token(pki, "boot"), "csr": csr})
        assert code == 200, body
    finally:
        assert s.stop() == 0
    boot = body["serial"]
    (tmp_path / "boot.crt").write_text(body["chain"])
    make_csr(tmp_path, "kept")
    run("ca", "issue", "--dir", ca, "kept", "--csr", tmp_path / "kept.csr", "--out",
        tmp_path / "kept", check=True)
    kept = active(ca, "kept")[0]["serial"]
    web = active(ca, "web")[0]["serial"]

    s = Server(pki, "--lifecycle-interval", "1s", env=moved(AHEAD_DAYS))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not events(s, "rotation_needed"):
            time.sleep(0.2)
        # flagged: a warning naming the service, the serial and the expiry, and what to do
        flag = [l for l in events(s, "rotation_needed") if "service=boot" in l]
        assert flag, s.log()
        end = datetime.datetime.fromtimestamp(body["not_after"], datetime.timezone.utc)
        assert f"serial={boot}" in flag[0] and end.strftime("%Y-%m-%dT%H:%M:%SZ") in flag[0]
        assert "/api/v1/renew" in flag[0]
        # the run's summary line comes after its flags and rotations: wait for it (bounded)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and \
                not any("rotation_needed=1" in l for l in events(s, "lifecycle")):
            time.sleep(0.2)
        assert any("rotation_needed=1" in l for l in events(s, "lifecycle")), s.log()
        # an audit row in the store, and no re-issue: boot's certificate is the one it holds
        audit = rows(ca, "SELECT service, serial, detail FROM audit "
                         "WHERE action = 'rotation-needed'")
        assert ("boot", boot, "not_after=" + end.strftime("%Y-%m-%dT%H:%M:%SZ")) in audit, audit
        assert active(ca, "boot")[0]["serial"] == boot
        # the others were rotated as before: a new key for web, kept's key re-signed into
        # the directory it reads
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (active(ca, "web")[0]["serial"] == web or
                                               active(ca, "kept")[0]["serial"] == kept):
            time.sleep(0.2)
        assert active(ca, "web")[0]["serial"] != web
        assert active(ca, "kept")[0]["serial"] != kept
        assert not [l for l in events(s, "rotation_needed") if "service=boot" not in l]
        # /metrics: boot needs a rotation, the rotated ones do not
        assert _metric(s, 'meshtls_cert_rotation_needed{service="boot"}') == 1
        assert _metric(s, 'meshtls_cert_rotation_needed{service="web"}') == 0
        assert _metric(s, 'meshtls_cert_rotation_needed{service="kept"}') == 0
        # the admin inventory says it per certificate
        code, inv = call(s, pki, "GET", f"{ADMIN_LIST}?status=active", svc="admin",
                         context=unverified(pki, "admin"))
        assert code == 200, inv
        need = {c["service"]: c["rotation_needed"] for c in inv["certificates"]}
        assert need["boot"] is True and need["web"] is False and need["kept"] is False, need
        # the service renews with a new key: nothing is flagged any more
        csr2, key2 = make_csr(tmp_path, "boot2", cn="boot", sans=[f"URI:spiffe://{TD}/svc/boot"])
        c = unverified(pki)
        c.load_cert_chain(str(tmp_path / "boot.crt"), str(key))
        code, body2 = call(s, pki, "POST", "/api/v1/renew", body={"csr": csr2}, context=c)
        assert code == 200, body2
        assert _metric(s, 'meshtls_cert_rotation_needed{service="boot"}') == 0
        code, inv = call(s, pki, "GET", f"{ADMIN_LIST}?service=boot", svc="admin",
                         context=unverified(pki, "admin"))
        assert code == 200
        assert {(c["serial"], c["status"], c["rotation_needed"]) for c in inv["certificates"]} \
            == {(boot, "superseded", False), (body2["serial"], "active", False)}, inv
        n = len(events(s, "rotation_needed"))
        runs = len(events(s, "lifecycle"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(events(s, "lifecycle")) < runs + 2:
            time.sleep(0.2)
        assert len(events(s, "rotation_needed")) == n
        assert "rotation_needed=0" in events(s, "lifecycle")[-1]
    finally:
        assert s.stop() == 0
