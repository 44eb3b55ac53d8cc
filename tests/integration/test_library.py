"""libmeshtls end to end: the example server and client (examples/), built
against the public API, with certificates from `meshtls ca`, and real
OpenSSL peers (openssl s_client, curl, Python's ssl).

Covers: mutual handshake with a trusted identity; server name, SPIFFE ID and
trust-domain verification by clients; wrong CA, no client certificate,
expired, revoked (CRL over the whole chain), TLS 1.2 refused by default; a CA
bundle with several CAs (CA rotation); fail-closed start-up errors (key
permissions, key/cert mismatch, malformed PEM, missing file).
"""
import datetime
import os
import shutil
import ssl
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD_DIR, free_port, run, read_child_log

SERVER = BUILD_DIR / "mtls_server"
CLIENT = BUILD_DIR / "mtls_client"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs: test.local (services api, web) and other.local (intruder)."""
    d = tmp_path_factory.mktemp("pki")
    ca, other = d / "ca", d / "other"
    run("ca", "init", "--dir", ca, "--trust-domain", "test.local", check=True)
    run("ca", "register", "--dir", ca, "api", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "register", "--dir", ca, "web", check=True)
    run("ca", "issue", "--dir", ca, "api", "--out", d / "certs", check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", d / "certs", check=True)
    run("ca", "init", "--dir", other, "--trust-domain", "other.local", check=True)
    run("ca", "register", "--dir", other, "web", check=True)
    run("ca", "issue", "--dir", other, "web", "--out", d / "intruder", check=True)
    return d


class Server:
    """The example server; its stderr goes to a temporary file read by log()."""

    def __init__(self, *args):
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([str(SERVER), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"server did not start: {line!r} {self.log()}")
        self.port = int(line.rsplit(":", 1)[1])

    def log(self):
        return read_child_log(self.err)

    def wait_log(self, text, timeout=10.0):
        """Wait (bounded) until the server has logged `text`; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and text not in self.log():
            time.sleep(0.05)
        return self.log()

    def stop(self, wait_for=None):
        if wait_for:
            self.wait_log(wait_for)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.log()


@pytest.fixture
def server(pki):
    started = []

    def start(*extra, ca=None):
        c = pki / "certs"
        s = Server("--cert", c / "api.crt", "--key", c / "api.key",
                   "--cacert", ca or (c / "ca.crt"), *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def client(pki, port, *args, who="certs", name="web"):
    c = pki / who
    return subprocess.run([str(CLIENT), "--cert", c / f"{name}.crt", "--key", c / f"{name}.key",
                           "--cacert", pki / "certs" / "ca.crt",
                           "--connect", f"127.0.0.1:{port}", *map(str, args)],
                          capture_output=True, text=True, timeout=30)


def test_trusted_client_gets_through_with_its_identity(pki, server):
    s = server()
    r = client(pki, s.port, "--server-name", "localhost")
    assert r.returncode == 0, r.stderr
    assert "hello spiffe://test.local/svc/web" in r.stdout
    assert "connected to spiffe://test.local/svc/api (TLSv1.3)" in r.stderr


def test_client_verifies_spiffe_id_and_trust_domain(pki, server):
    s = server()
    assert client(pki, s.port, "--verify-spiffe-id", "spiffe://test.local/svc/api").returncode == 0
    assert client(pki, s.port, "--verify-trust-domain", "test.local").returncode == 0
    r = client(pki, s.port, "--verify-spiffe-id", "spiffe://test.local/svc/billing")
    assert r.returncode == 1
    assert "SPIFFE ID does not match spiffe://test.local/svc/billing" in r.stderr
    # and names what the server actually presented: the fix is on one side or the other
    assert "it presented spiffe://test.local/svc/api with subject CN=api" in r.stderr, r.stderr
    r = client(pki, s.port, "--verify-trust-domain", "other.local")
    assert r.returncode == 1 and "does not match" in r.stderr


def test_client_refuses_wrong_server_name(pki, server):
    s = server()
    r = client(pki, s.port, "--server-name", "billing.internal")
    assert r.returncode == 1
    # the name asked for, and the names the server's certificate carries
    assert "does not name billing.internal: it presented DNS:localhost, IP:127.0.0.1" in r.stderr
    assert "with subject CN=api" in r.stderr
    # the server says the client gave up, not that it sent no certificate
    log = s.stop(wait_for="aborted")
    assert "the peer aborted the handshake" in log and "no certificate" not in log


def test_client_needs_an_expected_identity(pki):
    r = client(pki, 1)
    assert r.returncode == 1
    assert "server name" in r.stderr and "SPIFFE ID" in r.stderr


def test_untrusted_ca_is_refused_both_ways(pki, server):
    s = server()
    r = client(pki, s.port, "--server-name", "localhost", who="intruder")
    assert r.returncode == 1
    err = s.stop(wait_for="handshake failed")
    assert "handshake failed" in err
    assert "unable to get local issuer certificate" in err or "certificate verify failed" in err


def test_bundle_with_two_cas_accepts_both(pki, server, tmp_path):
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes((pki / "certs" / "ca.crt").read_bytes() +
                       (pki / "intruder" / "ca.crt").read_bytes())
    s = server(ca=bundle)
    r = client(pki, s.port, "--verify-trust-domain", "other.local", who="intruder")
    # the server trusts both CAs; the intruder's client still checks the server
    # against its own bundle (test.local), which it was given above
    assert r.returncode == 1  # server's name is test.local, not other.local
    r = client(pki, s.port, "--verify-trust-domain", "test.local", who="intruder")
    assert r.returncode == 0, r.stderr
    assert "hello spiffe://other.local/svc/web" in r.stdout


def test_openssl_s_client_and_curl(pki, server):
    s = server()
    c = pki / "certs"
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-quiet",
                        "-cert", c / "web.crt", "-cert_chain", c / "web.crt", "-key",
                        c / "web.key", "-CAfile", c / "ca.crt",
                        "-verify_return_error", "-verify_hostname", "localhost"],
                       input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30)
    assert "hello spiffe://test.local/svc/web" in r.stdout, r.stderr
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cert", c / "web.crt", "--key",
                        c / "web.key", "--cacert", c / "ca.crt", f"https://localhost:{s.port}/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello spiffe://test.local/svc/web\n"


def test_no_client_certificate_is_refused(pki, server):
    s = server()
    ctx = ssl.create_default_context(cafile=str(pki / "certs" / "ca.crt"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            # TLS 1.3: the server's alert arrives after our Finished
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                tls.recv(100) or (_ for _ in ()).throw(ssl.SSLError("closed"))
    assert "the client sent no certificate" in s.stop(wait_for="no certificate")


def test_tls12_refused_by_default(pki, server):
    s = server()
    c = pki / "certs"
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-tls1_2",
                        "-cert", c / "web.crt", "-key", c / "web.key", "-CAfile", c / "ca.crt"],
                       input="", capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "protocol version" in r.stdout + r.stderr


def _expired_cert(pki, out):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
    ca = pki / "ca"
    ikey = serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(), None)
    icert = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
            .issuer_name(icert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://test.local/svc/web")]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ikey, hashes.SHA256()))
    out.mkdir()
    (out / "web.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) +
                                  icert.public_bytes(serialization.Encoding.PEM))
    kf = out / "web.key"
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kf.chmod(0o600)
    return out


def test_expired_client_is_refused(pki, server, tmp_path):
    _expired_cert(pki, tmp_path / "expired")
    s = server()
    c = tmp_path / "expired"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(c / "web.crt"), str(c / "web.key"))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if not tls.recv(100):
                    raise ssl.SSLError("closed")
    assert "certificate has expired" in s.stop(wait_for="certificate has expired")


def test_expired_own_certificate_refuses_to_start(pki, tmp_path):
    c = _expired_cert(pki, tmp_path / "expired")
    r = subprocess.run([str(SERVER), "--cert", c / "web.crt", "--key", c / "web.key",
                        "--cacert", pki / "certs" / "ca.crt"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "has expired" in r.stderr and str(c / "web.crt") in r.stderr


def test_revoked_client_is_refused_with_crl(pki, server, tmp_path):
    d = tmp_path
    ca = d / "ca"
    shutil.copytree(pki / "ca", ca)
    run("ca", "issue", "--dir", ca, "web", "--out", d / "fresh", check=True)
    serial = run("cert", "inspect", "--json", d / "fresh" / "web.crt", check=True).stdout
    import json
    serial = json.loads(serial)[0]["serial"]
    run("ca", "revoke", "--dir", ca, "--serial", serial, "--reason", "keyCompromise", check=True)
    run("ca", "crl", "--dir", ca, "--out", d / "crl.pem", check=True)
    s = server("--crl", d / "crl.pem")
    r = client(pki, s.port, "--server-name", "localhost", who=d / "fresh")
    assert r.returncode == 1
    assert "certificate revoked" in s.stop(wait_for="certificate revoked")
    # the unrevoked web certificate still works against a CRL-checking server
    s2 = server("--crl", d / "crl.pem")
    assert client(pki, s2.port, "--server-name", "localhost").returncode == 0


@pytest.mark.parametrize("case", ["group_readable_key", "mismatched_key", "malformed_pem",
                                  "missing_file"])
def test_startup_errors_name_the_file(pki, tmp_path, case):
    c = pki / "certs"
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    shutil.copy(c / "api.crt", cert)
    shutil.copy(c / "api.key", key)
    key.chmod(0o600)
    if case == "group_readable_key":
        key.chmod(0o640)
        want = [str(key), "chmod 600"]
    elif case == "mismatched_key":
        shutil.copy(c / "web.key", key)
        key.chmod(0o600)
        want = [str(key), str(cert), "does not match"]
    elif case == "malformed_pem":
        cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB!!!garbage\n-----END CERTIFICATE-----\n")
        want = [str(cert), "malformed PEM"]
    else:
        cert.unlink()
        want = [str(cert), "No such file"]
    r = subprocess.run([str(SERVER), "--cert", cert, "--key", key, "--cacert", c / "ca.crt"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    for w in want:
        assert w in r.stderr, r.stderr


def test_server_configured_by_grpc_env_and_yaml(pki, tmp_path):
    """The example takes GRPC_* variables (as in Kubernetes) and a YAML peer_tls block."""
    c = pki / "certs"
    env = dict(os.environ, GRPC_SERVER_CERT_PATH=str(c / "api.crt"),
               GRPC_SERVER_KEY_PATH=str(c / "api.key"), GRPC_CLIENT_CA_CERT_PATH=str(c / "ca.crt"),
               GRPC_REQUIRE_CLIENT_CERT="true")
    proc = subprocess.Popen([str(SERVER), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        r = client(pki, port, "--server-name", "localhost")
        assert r.returncode == 0 and "hello spiffe://test.local/svc/web" in r.stdout
    finally:
        proc.kill()
        proc.wait(5)
    cfg = tmp_path / "app.yaml"
    cfg.write_text(f"peer_tls:\n  cert_file: {c / 'api.crt'}\n  key_file: {c / 'api.key'}\n"
                   f"  ca_file: {c / 'ca.crt'}\n")
    proc = subprocess.Popen([str(SERVER), "--port", "0", "--config", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        assert client(pki, port, "--server-name", "localhost").returncode == 0
    finally:
        proc.kill()
        proc.wait(5)
    # a bad value names the variable
    env["GRPC_REQUIRE_CLIENT_CERT"] = "sometimes"
    r = subprocess.run([str(SERVER), "--port", "0"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 1 and "GRPC_REQUIRE_CLIENT_CERT" in r.stderr
    # a missing value names the key, the variables and the flag
    r = subprocess.run([str(SERVER), "--port", "0"], capture_output=True, text=True,
                       env={"PATH": os.environ.get("PATH", "")}, timeout=30)
    assert r.returncode == 1
    assert "server.cert_file is not set" in r.stderr and "GRPC_SERVER_CERT_PATH" in r.stderr
