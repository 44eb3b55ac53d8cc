"""A CRL past the 4 MiB every other PEM file is held to (cabench found `GET /crl` failing for
good above ~63,000 revocations, and the proxy would have refused such a file): 100,000 entries
(about 4.7 MiB of PEM) load in `proxy server --crl`, the listed client is refused, another is let
in, and `meshtls cert check` reads the file."""
import datetime
import signal
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID

from conftest import run
from proxy_util import EchoServer, Proxy, make_pki, wait_for

N = 100_000


def crl_for(issuer_dir, name, serials):
    """A conforming v2 CRL of `name` (root|intermediate) listing `serials`, as PEM bytes."""
    key = serialization.load_pem_private_key((issuer_dir / f"{name}.key").read_bytes(), None)
    crt = x509.load_pem_x509_certificate((issuer_dir / f"{name}.crt").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = crt.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    b = (x509.CertificateRevocationListBuilder().issuer_name(crt.subject)
         .last_update(now - datetime.timedelta(minutes=5))
         .next_update(now + datetime.timedelta(days=7))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                        False)
         .add_extension(x509.CRLNumber(7), False))
    when = now - datetime.timedelta(minutes=1)
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(when).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_crl_over_4_mib_loads_and_decides(tmp_path):
    pki = make_pki(tmp_path)
    ca, c = pki / "ca", pki / "certs"
    web = x509.load_pem_x509_certificate((c / "web.crt").read_bytes()).serial_number
    serials = [web] + [(1 << 126) + (i + 1) * 7919 for i in range(N)]  # 16 octets, as ours
    pem = crl_for(ca, "intermediate", serials) + crl_for(ca, "root", [])
    assert len(pem) > 4 * 1024 * 1024
    crl = tmp_path / "big.crl"
    crl.write_bytes(pem)
    r = run("cert", "check", crl, "--min-days", "1", timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    echo = EchoServer()
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt",
              "--key", c / "api.key", "--cacert", c / "ca.crt", "--allow-all", "--crl", crl)
    try:
        def attempt(who):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(c / "ca.crt"))
            ctx.load_cert_chain(str(c / f"{who}.crt"), str(c / f"{who}.key"))
            try:
                with socket.create_connection(("127.0.0.1", p.port), timeout=30) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                        s.sendall(b"ping\n")
                        return s.recv(10)
            except (ssl.SSLError, OSError):
                return b""
        assert attempt("evil") == b"ping\n", p.log()
        assert attempt("web") == b"", p.log()
        wait_for(lambda: "certificate revoked" in p.log(), what="revoked logged")
        assert p.stop(signal.SIGTERM) == 0
    finally:
        p.stop(signal.SIGKILL)
        echo.close()
