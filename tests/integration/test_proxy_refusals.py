"""Refusals a person can diagnose (issue 9, sections 3 and 4), on `proxy server`:

- handshake failures are classified by what happened: plaintext HTTP (answered with a
  plaintext HTTP 400 that says TLS is required, as nginx does), random bytes, a TLS
  version below the minimum, a client that really sent no certificate; only the last is
  `no_client_cert`, and none of the others moves `meshtls_cert_validation_failures_total`;
- a refused client certificate (untrusted, expired, revoked) is logged with its subject,
  SPIFFE ID, serial and issuer, taken from the certificate even though it failed;
- a `proxy client` refused by its server (revoked certificate: a TLS alert; policy: close_notify
  right after the handshake) says so in its close line;
- PostgreSQL's SSLRequest is answered with 'S' and then mutual TLS: psql with
  sslmode=verify-full and a client certificate talks to the proxy server directly;
  PostgreSQL 17's direct TLS gets ALPN `postgresql` with `--alpn postgresql` (only then);
- refusals say when (revoked at, expired at, not yet valid until), --verify-depth, an
  oversized certificate, per-CRL nextUpdate gauges.
"""
import datetime
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509

from conftest import run
from proxy_util import Proxy, forge_client_cert, make_pki, wait_for
from proxy_util import echo, procs  # noqa: F401  (pytest fixtures, shared)
from servers import Postgres


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = make_pki(tmp_path_factory.mktemp("pki"))
    run("ca", "register", "--dir", d / "ca", "db", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "issue", "--dir", d / "ca", "db", "--out", d / "db", check=True)
    return d


def server(pki, procs, port, *extra):
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--allow-all", *extra)
    procs.append(p)
    return p


def serial_of(crt):
    out = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-serial"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.strip().split("=", 1)[1].lower()


def attempt(ctx, port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping\n")
                return s.recv(10)
    except (ssl.SSLError, OSError):
        return b""


def presenting(pki, d, name="web"):
    """A client context trusting pki's CA and presenting d/NAME.crt."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    return ctx


def errors(p):
    m = p.metrics()
    return ({k.split('"')[1]: v for k, v in m.items()
             if k.startswith("meshtls_tls_handshake_errors_total")},
            {k.split('"')[1]: v for k, v in m.items()
             if k.startswith("meshtls_cert_validation_failures_total")})


def test_plaintext_http_gets_a_400_that_says_tls(pki, procs, echo):
    p = server(pki, procs, echo.port)
    r = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", f"http://127.0.0.1:{p.port}/"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.startswith("HTTP/1.1 400"), r.stdout + r.stderr
    assert "requires TLS" in r.stdout
    wait_for(lambda: errors(p)[0]["plaintext"] == 1, what="plaintext counted")
    hs, cert = errors(p)
    assert hs["no_client_cert"] == 0 and hs["protocol"] == 0
    assert sum(cert.values()) == 0, cert  # not a certificate problem
    wait_for(lambda: "reason=plaintext" in p.log() and "an HTTP request" in p.log(),
             what="plaintext logged")
    assert echo.connections == 0


def test_random_bytes_and_old_tls_are_not_missing_certificates(pki, procs, echo):
    p = server(pki, procs, echo.port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(bytes(range(1, 200)))
        try:
            assert s.recv(100) == b""  # closed without an HTTP answer
        except ConnectionResetError:
            pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(pki / "certs" / "web.crt"), str(pki / "certs" / "web.key"))
    assert attempt(ctx, p.port) == b""
    wait_for(lambda: errors(p)[0]["version"] == 1 and errors(p)[0]["plaintext"] == 1,
             what="version and plaintext counted")
    hs, cert = errors(p)
    assert hs["no_client_cert"] == 0
    assert sum(cert.values()) == 0, cert
    wait_for(lambda: "no TLS version we accept (minimum TLS 1.3)" in p.log(), what="logged")


def test_only_a_missing_certificate_is_no_client_cert(pki, procs, echo):
    p = server(pki, procs, echo.port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    assert attempt(ctx, p.port) == b""
    wait_for(lambda: errors(p)[0]["no_client_cert"] == 1, what="no_client_cert counted")
    assert errors(p)[1]["no_client_cert"] == 1
    wait_for(lambda: "the client sent no certificate" in p.log(), what="logged")


def test_refused_certificates_are_named(pki, procs, echo, tmp_path):
    p = server(pki, procs, echo.port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(pki / "intruder" / "web.crt"), str(pki / "intruder" / "web.key"))
    assert attempt(ctx, p.port) == b""
    forged = forge_client_cert(pki, tmp_path / "expired", expired=True)
    assert attempt(presenting(pki, forged), p.port) == b""
    wait_for(lambda: errors(p)[0]["untrusted"] == 1 and errors(p)[0]["expired"] == 1,
             what="both refusals counted")
    # counted just before logged, closed after: wait for both close lines
    wait_for(lambda: p.log().count(" close conn=") >= 2, what="both close lines")
    log = p.log()
    for crt, td in ((pki / "intruder" / "web.crt", "other.local"),
                    (forged / "web.crt", "test.local")):
        serial = serial_of(crt)
        line = next((ln for ln in log.splitlines() if f"serial={serial}" in ln
                     and "reason=" in ln and "handshake with client failed" in ln), None)
        assert line, f"no refusal line names serial {serial}:\n{log}"
        assert f"id=spiffe://{td}/svc/web" in line and 'subject="CN=web' in line, line
        assert "issuer=" in line
        if td == "test.local":  # the expired one: when, from its notAfter
            na = x509.load_pem_x509_certificate(crt.read_bytes()).not_valid_after
            assert f"certificate expired at {na:%Y-%m-%dT%H:%M:%SZ}" in line, line
        # the close line carries the identity too, not id=- serial=-
        assert any(f"serial={serial}" in ln and f"id=spiffe://{td}/svc/web" in ln
                   for ln in log.splitlines() if " close conn=" in ln), log


def test_revoked_client_is_named(procs, echo, tmp_path):
    (tmp_path / "pki").mkdir()
    d = make_pki(tmp_path / "pki")
    ca, c = d / "ca", d / "certs"
    serial = serial_of(c / "web.crt")
    run("ca", "revoke", "--dir", ca, "--serial", serial, "--reason", "keyCompromise", check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    p = server(d, procs, echo.port, "--crl", crl)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(c / "ca.crt"))
    ctx.load_cert_chain(str(c / "web.crt"), str(c / "web.key"))
    assert attempt(ctx, p.port) == b""
    wait_for(lambda: errors(p)[0]["revoked"] == 1, what="revoked counted")
    # the count comes just before the log line: wait for the line too
    wait_for(lambda: "certificate revoked" in p.log(), what="revoked logged")
    line = next(ln for ln in p.log().splitlines() if "certificate revoked" in ln)
    assert f"serial={serial}" in line and "id=spiffe://test.local/svc/web" in line, line
    # whose certificate, like the untrusted and expired ones: subject and issuer too
    assert 'subject="CN=web' in line and 'issuer="' in line and "Intermediate" in line, line
    # and when and why, from the CRL entry
    m = re.search(r"certificate revoked at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "
                  r"\(reason keyCompromise\)", line)
    assert m, line
    when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ")
    assert abs((datetime.datetime.utcnow() - when).total_seconds()) < 3600, line


@pytest.mark.skipif(not shutil.which("psql"), reason="psql not installed")
def test_psql_straight_to_the_proxy_server(pki, procs):
    db = pki / "db"
    pg = Postgres(db / "db.crt", db / "db.key", db / "ca.crt")
    try:
        # behind the sidecar PostgreSQL listens in plaintext on loopback: identity is the
        # proxy's job (certificate auth over the proxy is the client's mTLS)
        (pg.data / "pg_hba.conf").write_text("local all all trust\n"
                                             "host all all 127.0.0.1/32 trust\n")
        import os
        os.kill(pg.postmaster_pid(), signal.SIGHUP)
        c = pki / "certs"
        p = Proxy("server", "--target", f"127.0.0.1:{pg.port}", "--cert", c / "api.crt",
                  "--key", c / "api.key", "--cacert", c / "ca.crt",
                  "--allow-uri", "spiffe://test.local/svc/web")
        procs.append(p)
        conn = (f"host=localhost hostaddr=127.0.0.1 port={p.port} dbname=postgres user=postgres "
                f"sslmode=verify-full sslrootcert={c / 'ca.crt'} sslcert={c / 'web.crt'} "
                f"sslkey={c / 'web.key'} gssencmode=disable")
        r = None
        for _ in range(50):  # the HBA reload is asynchronous: bounded retries
            r = subprocess.run(["psql", conn, "-Atc", "select 40 + 2"], capture_output=True,
                               text=True, timeout=30)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.returncode == 0, r.stderr + p.log() + pg.log()
        assert r.stdout.strip() == "42"
        assert "decision=allow" in p.log() and "spiffe://test.local/svc/web" in p.log()
        # a client whose certificate the proxy does not trust gets nothing
        bad = (f"host=localhost hostaddr=127.0.0.1 port={p.port} dbname=postgres user=postgres "
               f"sslmode=require sslcert={pki / 'intruder' / 'web.crt'} "
               f"sslkey={pki / 'intruder' / 'web.key'} gssencmode=disable")
        r = subprocess.run(["psql", bad, "-Atc", "select 1"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0
    finally:
        pg.stop()


def test_debug_log_says_something_useful(pki, procs, echo, tmp_path):
    """--log-level debug: the effective rules with their source and the files watched at
    start; per connection the TLS version, cipher and resumption; a reload names the file
    that changed and what is now served; a vanished file is logged."""
    import shutil as sh
    c = pki / "certs"
    d = tmp_path / "certs"
    d.mkdir()
    for f in ("api.crt", "api.key", "ca.crt"):
        sh.copy(c / f, d / f)
    (d / "api.key").chmod(0o600)
    pol = tmp_path / "policy.yaml"
    pol.write_text("services:\n  api:\n    allow:\n      - uri: spiffe://test.local/svc/web\n")
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", d / "api.crt", "--key",
              d / "api.key", "--cacert", d / "ca.crt", "--policy", pol, "--service", "api",
              "--allow-cn", "legacy", "--log-level", "debug")
    procs.append(p)
    log = p.log()
    assert "rule n=1 kind=uri value=spiffe://test.local/svc/web service=api source=" + str(pol) \
        in log, log
    assert "rule n=2 kind=cn value=legacy" in log and 'source="flags and proxy.allow"' in log
    wait_for(lambda: f"watch flag=--policy path={pol}" in p.log(), what="watched files")
    assert f"watch flag=--cert path={d / 'api.crt'}" in p.log()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(c / "ca.crt"))
    ctx.load_cert_chain(str(c / "web.crt"), str(c / "web.key"))
    assert attempt(ctx, p.port) == b"ping\n"
    wait_for(lambda: "handshake conn=" in p.log(), what="debug handshake line")
    line = next(ln for ln in p.log().splitlines() if "handshake conn=" in ln)
    assert "version=TLSv1.3" in line and "cipher=" in line and "resumed=false" in line, line
    # a vanished file is logged; the proxy keeps serving
    (d / "ca.crt").rename(d / "ca.crt.away")
    wait_for(lambda: f"--cacert {d / 'ca.crt'}: No such file" in p.log(), what="vanished")
    (d / "ca.crt.away").rename(d / "ca.crt")
    wait_for(lambda: "is back" in p.log(), what="back")
    # a reload names the changed file and what is served now
    pol.write_text(pol.read_text() + "      - cn: web\n")
    wait_for(lambda: "reload (file change: --policy" in p.log(), timeout=15, what="reload")
    line = next(ln for ln in p.log().splitlines() if "reload (file change: --policy" in ln)
    assert 'now serving spiffe://test.local/svc/api subject "CN=api' in line, line
    assert "(serial " in line and "valid until" in line
    assert "3 rule(s)" in line, line


def stale_crls(ca, out, revoked_serial):
    """The root's and the intermediate's CRLs, both past their nextUpdate (a publication
    that is late: the clock moved past it), the intermediate's revoking `revoked_serial`."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    now = datetime.datetime.utcnow()
    pem = b""
    for name, serials in (("root", []), ("intermediate", [revoked_serial])):
        key = serialization.load_pem_private_key((ca / f"{name}.key").read_bytes(), None)
        crt = x509.load_pem_x509_certificate((ca / f"{name}.crt").read_bytes())
        # conforming (RFC 5280 5.2.1, 5.2.3: the proxy refuses a CRL without these)
        b = (x509.CertificateRevocationListBuilder().issuer_name(crt.subject)
             .last_update(now - datetime.timedelta(days=10))
             .next_update(now - datetime.timedelta(days=1))
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 key.public_key()), False)
             .add_extension(x509.CRLNumber(2), False))
        for sn in serials:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(sn, 16))
                .revocation_date(now - datetime.timedelta(days=5)).build())
        pem += b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    out.write_bytes(pem)
    return out


def test_stale_crl_keeps_refusing_what_it_lists_and_no_one_else(procs, echo, tmp_path):
    """A CRL past its nextUpdate does not lock every client out (OpenSSL's and nginx's
    answer) and does not let a revoked certificate in: the last CRL still decides, and the
    staleness is logged and exported."""
    (tmp_path / "pki").mkdir()
    d = make_pki(tmp_path / "pki")
    c = d / "certs"
    crl = stale_crls(d / "ca", tmp_path / "crl.pem", serial_of(c / "web.crt"))
    p = server(d, procs, echo.port, "--crl", crl)
    wait_for(lambda: "passed its nextUpdate" in p.log(), what="stale warning")
    for who, ok in (("evil", True), ("web", False)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(c / "ca.crt"))
        ctx.load_cert_chain(str(c / f"{who}.crt"), str(c / f"{who}.key"))
        assert (attempt(ctx, p.port) == b"ping\n") == ok, (who, p.log())
    # the client hears the alert before the server's worker counts it: wait for the count
    wait_for(lambda: p.metrics()['meshtls_tls_handshake_errors_total{reason="revoked"}'] == 1,
             what="revoked counted")
    m = p.metrics()
    assert m["meshtls_crl_stale"] == 2
    # one gauge per CRL, labelled by its issuer: which one is late
    per_crl = {k: v for k, v in m.items() if k.startswith("meshtls_crl_next_update_seconds{")}
    assert len(per_crl) == 2 and all(v < 0 for v in per_crl.values()), per_crl
    issuers = {k.split('issuer="', 1)[1].rstrip('"}') for k in per_crl}
    for name in ("root", "intermediate"):
        crt = x509.load_pem_x509_certificate((d / "ca" / f"{name}.crt").read_bytes())
        assert crt.subject.rfc4514_string() in issuers, (issuers, crt.subject)
    assert "meshtls ca crl --out" in p.log()


# ---- client side: a `proxy client` refused by its server says why ---------------------------

def client(pki, procs, server_port, who="web", certs="certs"):
    c, k = pki / "certs", pki / certs
    p = Proxy("client", "--target", f"127.0.0.1:{server_port}", "--cert", k / f"{who}.crt",
              "--key", k / f"{who}.key", "--cacert", c / "ca.crt", "--verify-spiffe-id",
              "spiffe://test.local/svc/api")
    procs.append(p)
    return p


def through(p):
    """One plaintext exchange through client proxy `p`: what came back (b"" if refused)."""
    try:
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            s.sendall(b"ping\n")
            return s.recv(10)
    except OSError:
        return b""


def close_line(p):
    wait_for(lambda: " close conn=" in p.log(), what="the client's close line")
    return next(ln for ln in p.log().splitlines() if " close conn=" in ln)


def test_client_denied_by_policy_says_so(pki, procs, echo):
    c = pki / "certs"
    srv = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
                c / "api.key", "--cacert", c / "ca.crt", "--allow-uri",
                "spiffe://test.local/svc/orders")
    procs.append(srv)
    cli = client(pki, procs, srv.port)
    assert through(cli) == b""
    line = close_line(cli)
    # no alert to report: a server denies by policy after the handshake, with close_notify
    # (docs/PROXY.md), so the client says what that means
    assert "the server closed without sending anything" in line, line
    assert "its policy may deny our identity (see its audit log)" in line, line
    assert 'reason="done"' not in line and "reason=done" not in line, line
    assert "target connection error" not in cli.log(), cli.log()
    assert echo.connections == 0


def test_client_with_revoked_certificate_says_so(procs, echo, tmp_path):
    (tmp_path / "pki").mkdir()
    d = make_pki(tmp_path / "pki")
    run("ca", "revoke", "--dir", d / "ca", "--serial", serial_of(d / "certs" / "web.crt"),
        check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", d / "ca", "--out", crl, check=True)
    srv = server(d, procs, echo.port, "--crl", crl)
    cli = client(d, procs, srv.port)
    assert through(cli) == b""
    line = close_line(cli)
    assert "TLS alert 'certificate revoked'" in line, cli.log()
    assert "our certificate is revoked" in line, line
    assert "reason=done" not in line and "target connection error" not in cli.log(), cli.log()
    assert echo.connections == 0


def test_oversized_client_certificate_is_cert_too_large(pki, procs, echo, tmp_path):
    """A Certificate message over OpenSSL's limit (SSL_CTX_set_max_cert_list, 100 KiB by
    default) is counted as what it is, not as a protocol error or a missing certificate."""
    blob = b"\x04\x83" + (120000).to_bytes(3, "big") + b"A" * 120000  # an OCTET STRING
    big = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), blob)
    forged = forge_client_cert(pki, tmp_path / "big", extensions=[(big, False)])
    assert (forged / "web.crt").stat().st_size > 150000
    p = server(pki, procs, echo.port)
    assert attempt(presenting(pki, forged), p.port) == b""
    wait_for(lambda: errors(p)[0]["cert_too_large"] == 1, what="cert_too_large counted")
    hs, cert = errors(p)
    assert cert["cert_too_large"] == 1, cert
    assert hs["no_client_cert"] == 0 and hs["protocol"] == 0, hs
    wait_for(lambda: "reason=cert_too_large" in p.log(), what="logged")
    assert echo.connections == 0


def deep_chain(out, intermediates=2):
    """root -> int1 -> ... -> leaf `web` (spiffe://deep.local/svc/web), with no path length
    limits: out/root.crt, out/web.crt (leaf + intermediates, leaf first), out/web.key."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.datetime.utcnow()

    def cert(cn, key, issuer_cn, issuer_key, ca):
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
             .add_extension(ski, False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 issuer_key.public_key()), False))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                              False, False), True)
        else:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://deep.local/svc/web")]), False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        return b.sign(issuer_key, hashes.SHA256())

    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    (out / "root.crt").write_bytes(pem(cert("deep root", root_key, "deep root", root_key, True)))
    chain, issuer_cn, issuer_key = [], "deep root", root_key
    for i in range(1, intermediates + 1):
        k = ec.generate_private_key(ec.SECP256R1())
        chain.insert(0, cert(f"deep int{i}", k, issuer_cn, issuer_key, True))
        issuer_cn, issuer_key = f"deep int{i}", k
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("web", leaf_key, issuer_cn, issuer_key, False)
    (out / "web.crt").write_bytes(b"".join(pem(c) for c in [leaf] + chain))
    (out / "web.key").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return out


@pytest.mark.parametrize("depth,accepted", [(None, True), ("2", True), ("1", False)])
def test_verify_depth_counts_intermediates(pki, procs, echo, tmp_path, depth, accepted):
    """--verify-depth N: at most N intermediates between the client's certificate and the
    trusted root.  Two (root -> int1 -> int2 -> leaf) pass the default (4) and 2, not 1."""
    d = deep_chain(tmp_path / "deep")
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", d / "root.crt", "--allow-trust-domain", "deep.local",
              *(("--verify-depth", depth) if depth else ()))
    procs.append(p)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(c / "ca.crt"))
    ctx.load_cert_chain(str(d / "web.crt"), str(d / "web.key"))
    if accepted:
        assert attempt(ctx, p.port) == b"ping\n", p.log()
        return
    assert attempt(ctx, p.port) == b""
    wait_for(lambda: errors(p)[0]["untrusted"] == 1, what="counted as untrusted")
    wait_for(lambda: "certificate chain too long" in p.log(), what="logged")
    line = next(ln for ln in p.log().splitlines() if "certificate chain too long" in ln)
    assert "verify depth allows: 1, --verify-depth" in line and "id=spiffe://deep.local/svc/web" in line, line
    assert echo.connections == 0


def test_not_yet_valid_client_says_until_when(pki, procs, echo, tmp_path):
    forged = forge_client_cert(pki, tmp_path / "future", starts_in=3600)
    nb = x509.load_pem_x509_certificate((forged / "web.crt").read_bytes()).not_valid_before
    p = server(pki, procs, echo.port)
    assert attempt(presenting(pki, forged), p.port) == b""
    wait_for(lambda: errors(p)[0]["expired"] == 1, what="counted as expired")
    wait_for(lambda: "not yet valid until" in p.log(), what="logged")
    line = next(ln for ln in p.log().splitlines() if "not yet valid until" in ln)
    assert f"certificate not yet valid until {nb:%Y-%m-%dT%H:%M:%SZ}" in line, line
    assert "reason=expired" in line and "id=spiffe://test.local/svc/web" in line, line


def test_crl_gauges_follow_a_reload(procs, echo, tmp_path):
    """meshtls_crl_next_update_seconds{issuer} is computed from the CRLs in service: fresh ones
    from `ca crl` count down from the future; after the file is replaced by stale ones (a
    reload on file change) the same issuers read negative."""
    (tmp_path / "pki").mkdir()
    d = make_pki(tmp_path / "pki")
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", d / "ca", "--out", crl, check=True)
    p = server(d, procs, echo.port, "--crl", crl)

    def per_crl():
        return {k: v for k, v in p.metrics().items()
                if k.startswith("meshtls_crl_next_update_seconds{")}
    before = per_crl()
    assert len(before) == 2 and all(v > 0 for v in before.values()), before
    assert p.metrics()["meshtls_crl_stale"] == 0
    stale_crls(d / "ca", tmp_path / "stale.pem", serial_of(d / "certs" / "web.crt"))
    (tmp_path / "stale.pem").replace(crl)
    wait_for(lambda: all(v < 0 for v in per_crl().values()), timeout=20,
             what="the reload's CRLs in the gauges")
    assert per_crl().keys() == before.keys()


@pytest.mark.parametrize("alpn,selected", [(None, None), ("postgresql", "postgresql"),
                                           ("h2,postgresql", "postgresql")])
def test_postgres17_direct_tls_alpn(pki, procs, echo, alpn, selected):
    """PostgreSQL 17's direct TLS (sslnegotiation=direct) offers ALPN `postgresql` and libpq
    refuses a server that selects none.  The proxy selects it only when told to (--alpn):
    without a list it selects nothing, on purpose (docs/PROXY.md)."""
    p = server(pki, procs, echo.port, *(("--alpn", alpn) if alpn else ()))
    ctx = presenting(pki, pki / "certs")
    ctx.set_alpn_protocols(["postgresql"])
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == selected
            s.sendall(b"ping\n")
            assert s.recv(10) == b"ping\n"


def test_gssenc_request_gets_n_then_ssl_request_gets_tls(pki, procs, echo):
    # libpq with gssencmode=prefer asks for GSSAPI encryption first: the sidecar answers 'N'
    # (not supported) on the same connection, and the SSLRequest that follows gets 'S' and
    # then the mutual-TLS handshake, as a PostgreSQL server without GSSAPI does
    import struct
    p = server(pki, procs, echo.port)
    gssenc = struct.pack("!II", 8, 80877104)
    sslreq = struct.pack("!II", 8, 80877103)
    c = pki / "certs"
    ctx = presenting(pki, c)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as raw:
        raw.sendall(gssenc)
        assert raw.recv(1) == b"N"
        raw.sendall(sslreq)
        assert raw.recv(1) == b"S"
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"after both\n")
            assert s.recv(20) == b"after both\n"
    wait_for(lambda: "decision=allow" in p.log(), what="allowed")


def test_allow_email_and_non_spiffe_uri_let_their_holder_in(pki, procs, echo, tmp_path):
    # --allow-email matches an email SAN exactly; --allow-uri takes any URI SAN for an exact
    # match (ghostunnel's semantics); a near miss of either stays out
    d = tmp_path / "others"
    # leaves with only an email or a URN SAN, signed by the test CA with openssl, as another
    # CA or a person's tooling would make them
    ca = pki / "ca"
    for name, san in (("mailer", "email:ops@example.org"),
                      ("urn", "URI:urn:example:billing-batch"),
                      ("near", "email:ops@example.org.evil")):
        key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
        d.mkdir(exist_ok=True)
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                        str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True,
                       timeout=30)
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName = {san}\nextendedKeyUsage = clientAuth\n"
                       "keyUsage = critical, digitalSignature\n"
                       "authorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA",
                        str(ca / "intermediate.crt"), "-CAkey", str(ca / "intermediate.key"),
                        "-set_serial", str(1000 + len(name)), "-days", "2", "-extfile", str(ext),
                        "-out", str(crt)], check=True, capture_output=True, timeout=30)
        crt.write_bytes(crt.read_bytes() + (ca / "intermediate.crt").read_bytes())
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt", "--key",
              c / "api.key", "--cacert", c / "ca.crt", "--allow-email", "ops@example.org",
              "--allow-uri", "urn:example:billing-batch")
    procs.append(p)
    assert attempt(presenting(pki, d, "mailer"), p.port) == b"ping\n"
    assert attempt(presenting(pki, d, "urn"), p.port) == b"ping\n"
    assert attempt(presenting(pki, d, "near"), p.port) == b""
    assert attempt(presenting(pki, c), p.port) == b""  # web: a SPIFFE ID no rule names
    wait_for(lambda: p.log().count("decision=deny") >= 2, what="two denials")
    log = p.log()
    assert 'rule="email ops@example.org"' in log or "email ops@example.org" in log, log
    assert "urn:example:billing-batch" in log
