"""Stock OpenSSL peers accept meshtls certificates and the example server:
`openssl verify` on an issued chain (and its CRL), `openssl s_client`, curl
and Python's `ssl` against examples/mtls_server, with a trusted client, no
client certificate, a certificate from another CA, an expired certificate
and a revoked one.  Every certificate here comes from `meshtls ca`, except
the expired one, which meshtls refuses to make: it is signed with the CA's
intermediate key by python3-cryptography."""
import datetime
import os
import re
import select
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD_DIR, run, read_child_log

SERVER = BUILD_DIR / "mtls_server"

pytestmark = pytest.mark.skipif(not SERVER.exists(),
                                reason=f"example server {SERVER} not built yet")

TD = "test.local"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """CA `ca` (trust domain test.local): billing (server: DNS localhost, IP
    127.0.0.1) and orders (client) in `certs`; an unrelated CA `other` issues
    its own `orders` into `intruder`."""
    d = tmp_path_factory.mktemp("pki")
    ca = d / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", TD, check=True)
    run("ca", "register", "--dir", ca, "billing", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "register", "--dir", ca, "orders", check=True)
    for svc in ("billing", "orders"):
        run("ca", "issue", "--dir", ca, svc, "--out", d / "certs", check=True)
    run("ca", "init", "--dir", d / "other", "--trust-domain", "other.local", check=True)
    run("ca", "register", "--dir", d / "other", "orders", check=True)
    run("ca", "issue", "--dir", d / "other", "orders", "--out", d / "intruder", check=True)
    return d


class Server:
    """examples/mtls_server on 127.0.0.1, port 0; stopped by PID."""

    def __init__(self, pki, *extra):
        c = pki / "certs"
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [str(SERVER), "--cert", str(c / "billing.crt"), "--key", str(c / "billing.key"),
             "--cacert", str(c / "ca.crt"), "--port", "0", *map(str, extra)],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = _readline(self.proc.stdout, 15)
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)", line.strip())
        if not m:
            self.stop()
            raise AssertionError(f"mtls_server did not start: {line!r}\n{self.log()}")
        self.port = int(m.group(1))

    def log(self):
        return read_child_log(self.err)

    def logged(self, text, timeout=10):
        """Whether `text` shows up in the server's log within `timeout`
        seconds (the server logs a refusal after sending its alert)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.05)
        return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        return self.log()


@pytest.fixture
def server(pki):
    started = []

    def start(*extra):
        s = Server(pki, *extra)
        started.append(s)
        return s
    yield start
    for s in started:
        log = s.stop()
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert bad not in log, log


def _readline(stream, timeout):
    """One line from a pipe, waiting at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    buf = ""
    while not buf.endswith("\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        ch = os.read(stream.fileno(), 1).decode(errors="replace")
        if not ch:
            break
        buf += ch
    return buf


def _split_chain(chain, out):
    """Write the leaf and the intermediate of `chain` to out/leaf.pem and
    out/intermediate.pem."""
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n",
                      chain.read_text(), re.S)
    assert len(pems) == 2, f"{chain}: expected leaf + intermediate, got {len(pems)} certs"
    out.mkdir(exist_ok=True)
    (out / "leaf.pem").write_text(pems[0])
    (out / "intermediate.pem").write_text(pems[1])
    return out / "leaf.pem", out / "intermediate.pem"


def _openssl_verify(*args):
    return subprocess.run(["openssl", "verify", *map(str, args)], capture_output=True,
                          text=True, timeout=30)


def _s_client(pki, port, who=None, name="orders"):
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
            "-CAfile", pki / "certs" / "ca.crt", "-verify_return_error",
            "-verify_ip", "127.0.0.1"]
    if who is not None:
        # -cert sends only the leaf; -cert_chain adds the intermediate
        argv += ["-cert", who / f"{name}.crt", "-cert_chain", who / f"{name}.crt",
                 "-key", who / f"{name}.key"]
    return argv


def _tls_client(pki, who=None, name="orders"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    if who is not None:
        ctx.load_cert_chain(str(who / f"{name}.crt"), str(who / f"{name}.key"))
    return ctx


def _http_get(ctx, port, host="localhost"):
    """GET / over mTLS; returns the response.  In TLS 1.3 the server judges
    the client certificate after the client's Finished, so a refusal shows up
    as an alert on the first read, not in the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() == "TLSv1.3"
            tls.sendall(b"GET / HTTP/1.1\r\nHost: billing\r\n\r\n")
            data = b""
            while True:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    return data.decode()


def _refused(ctx, port):
    """The SSLError with which the server refuses our certificate.  We send
    nothing and only read: in TLS 1.3 the server judges the client
    certificate after the client's Finished, so its verdict is the alert on
    our first read (data we sent meanwhile could make its kernel answer with
    a reset that races the alert)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(5)
            try:
                data = tls.recv(4096)
            except ssl.SSLError as e:
                return str(e)
            except TimeoutError:
                data = "nothing within 5 s: the handshake was accepted"
    raise AssertionError(f"server did not refuse with an alert: {data!r}")


# --- openssl verify ----------------------------------------------------------

def test_openssl_verify_accepts_issued_chain(pki, tmp_path):
    c = pki / "certs"
    for svc, purpose in (("billing", "sslserver"), ("orders", "sslclient")):
        leaf, inter = _split_chain(c / f"{svc}.crt", tmp_path / svc)
        r = _openssl_verify("-CAfile", c / "ca.crt", "-untrusted", inter, "-purpose", purpose,
                            leaf)
        assert r.returncode == 0 and r.stdout.strip() == f"{leaf}: OK", r.stdout + r.stderr
        # the trust bundle alone (the root) is not enough: the intermediate is needed
        r = _openssl_verify("-CAfile", c / "ca.crt", leaf)
        assert r.returncode != 0
        assert "unable to get local issuer certificate" in r.stdout + r.stderr


def test_openssl_verify_rejects_other_ca(pki, tmp_path):
    leaf, inter = _split_chain(pki / "intruder" / "orders.crt", tmp_path)
    r = _openssl_verify("-CAfile", pki / "certs" / "ca.crt", "-untrusted", inter, leaf)
    assert r.returncode != 0
    assert "unable to get local issuer certificate" in r.stdout + r.stderr


def test_openssl_verify_with_crl_sees_revocation(pki, tmp_path):
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", TD, check=True)
    run("ca", "register", "--dir", ca, "orders", check=True)
    run("ca", "issue", "--dir", ca, "orders", "--out", tmp_path / "out", check=True)
    leaf, inter = _split_chain(tmp_path / "out" / "orders.crt", tmp_path / "split")
    bundle = tmp_path / "out" / "ca.crt"
    crl = tmp_path / "crl.pem"
    # the CRL file holds the intermediate's CRL and the root's: -crl_check_all
    # checks every certificate of the chain
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    r = _openssl_verify("-CAfile", bundle, "-untrusted", inter, "-CRLfile", crl,
                        "-crl_check_all", leaf)
    assert r.returncode == 0, r.stdout + r.stderr
    run("ca", "revoke", "--dir", ca, "orders", "--reason", "keyCompromise", check=True)
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    r = _openssl_verify("-CAfile", bundle, "-untrusted", inter, "-CRLfile", crl,
                        "-crl_check_all", leaf)
    assert r.returncode != 0
    assert "certificate revoked" in r.stdout + r.stderr


# --- openssl s_client -----------------------------------------------------------

def test_s_client_trusted_certificate_gets_echo(pki, server):
    s = server()
    p = subprocess.Popen(_s_client(pki, s.port, pki / "certs"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write("ping from orders\n")
        p.stdin.flush()
        assert _readline(p.stdout, 15) == "ping from orders\n", s.log()
    finally:
        p.kill()
        p.communicate(timeout=10)
    assert s.logged(f"accepted client spiffe://{TD}/svc/orders"), s.log()


def test_s_client_without_certificate_is_refused(pki, server):
    s = server()
    # TLS 1.3: the handshake completes on the client's side; the server's
    # "certificate required" alert arrives when the client reads.  (-quiet
    # ignores EOF on stdin, so s_client keeps reading the connection.)
    r = subprocess.run(_s_client(pki, s.port), input="", capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "alert certificate required" in r.stderr, r.stderr
    assert s.logged("the client sent no certificate"), s.log()


def test_s_client_with_certificate_of_another_ca_is_refused(pki, server):
    s = server()
    r = subprocess.run(_s_client(pki, s.port, pki / "intruder"), input="",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "alert unknown ca" in r.stderr, r.stderr
    assert s.logged("unable to get local issuer certificate"), s.log()


# --- curl ---------------------------------------------------------------------------

def _curl(pki, port, *args, who="certs", url_host="127.0.0.1"):
    cert = ["--cert", pki / who / "orders.crt", "--key", pki / who / "orders.key"] if who else []
    return subprocess.run(["curl", "-sS", "--max-time", "10", *cert,
                           "--cacert", pki / "certs" / "ca.crt", *args,
                           f"https://{url_host}:{port}/"],
                          capture_output=True, text=True, timeout=30)


def test_curl_sees_its_spiffe_id(pki, server):
    s = server()
    # by the server's IP SAN
    r = _curl(pki, s.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"hello spiffe://{TD}/svc/orders\n"
    # by its DNS SAN, pinned to loopback with --resolve
    r = _curl(pki, s.port, "--resolve", f"localhost:{s.port}:127.0.0.1", url_host="localhost")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"hello spiffe://{TD}/svc/orders\n"


def test_curl_checks_the_server_name(pki, server):
    s = server()
    r = _curl(pki, s.port, "--resolve", f"payments.test:{s.port}:127.0.0.1",
              url_host="payments.test")
    assert r.returncode == 60, r.stderr  # curl: peer certificate cannot be authenticated
    assert "hello" not in r.stdout


def test_curl_refused_without_or_with_untrusted_certificate(pki, server):
    s = server()
    for who in (None, "intruder"):
        r = _curl(pki, s.port, who=who)
        assert r.returncode != 0, f"{who}: {r.stdout}"
        assert "hello" not in r.stdout
    assert s.logged("the client sent no certificate"), s.log()
    assert s.logged("unable to get local issuer certificate"), s.log()


# --- Python ssl ---------------------------------------------------------------------

def test_python_ssl_trusted_client(pki, server):
    s = server()
    resp = _http_get(_tls_client(pki, pki / "certs"), s.port)
    assert resp.startswith("HTTP/1.1 200 OK\r\n")
    assert resp.endswith(f"\r\n\r\nhello spiffe://{TD}/svc/orders\n")


def test_python_ssl_refusals_name_the_reason(pki, server):
    s = server()
    assert "CERTIFICATE_REQUIRED" in _refused(_tls_client(pki), s.port)
    assert "UNKNOWN_CA" in _refused(_tls_client(pki, pki / "intruder"), s.port)


def _expired_cert(pki, out, name="orders"):
    """A leaf for `name` signed by the CA's intermediate, expired yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca = pki / "ca"
    ikey = serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(), None)
    icert = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    ski = icert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TD),
                                     x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(icert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TD}/svc/{name}")]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           False)
            .sign(ikey, hashes.SHA256()))
    out.mkdir()
    (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) +
                                      icert.public_bytes(serialization.Encoding.PEM))
    kf = out / f"{name}.key"
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kf.chmod(0o600)
    return out


def test_python_ssl_expired_client_is_refused(pki, server, tmp_path):
    who = _expired_cert(pki, tmp_path / "expired")
    # the same chain is otherwise sound: openssl verify names only the expiry
    leaf, inter = _split_chain(who / "orders.crt", tmp_path / "split")
    r = _openssl_verify("-CAfile", pki / "certs" / "ca.crt", "-untrusted", inter, leaf)
    assert "certificate has expired" in r.stdout + r.stderr
    s = server()
    assert "CERTIFICATE_EXPIRED" in _refused(_tls_client(pki, who), s.port)
    assert s.logged("certificate has expired"), s.log()


def test_python_ssl_revoked_client_is_refused_with_crl(pki, server, tmp_path):
    ca = pki / "ca"
    run("ca", "register", "--dir", ca, "inventory", check=True)
    run("ca", "issue", "--dir", ca, "inventory", "--out", tmp_path / "inv", check=True)
    ctx = _tls_client(pki, tmp_path / "inv", name="inventory")
    # before revocation the server (with a CRL) accepts it
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    s = server("--crl", crl)
    assert f"hello spiffe://{TD}/svc/inventory\n" in _http_get(ctx, s.port)
    s.stop()
    run("ca", "revoke", "--dir", ca, "inventory", "--reason", "keyCompromise", check=True)
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    s = server("--crl", crl)
    assert "CERTIFICATE_REVOKED" in _refused(ctx, s.port)
    # the CRL does not get in the way of a certificate that is still good
    assert f"hello spiffe://{TD}/svc/orders\n" in _http_get(_tls_client(pki, pki / "certs"),
                                                            s.port)
    assert s.logged("certificate revoked"), s.log()
