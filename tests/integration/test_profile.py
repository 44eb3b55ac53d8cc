"""Verification stricter than OpenSSL's (issue 9, section 6): `proxy server` refuses client
chains that OpenSSL verifies but that break a MUST-level rule of RFC 5280's profile, logs the
rule and counts reason="profile"; `--verify-profile off` accepts the same chains.
Certificates from `meshtls ca`, from `openssl req`/`openssl x509` with the usual extensions,
and a cert-manager-shaped chain pass.

Each bad chain is built with Python's `cryptography`; what its builder will not write (a
negative or 21-octet serial, a v1 certificate with extensions, a repeated extension,
GeneralizedTime before 2050) is made by editing the DER of the to-be-signed part and
signing it again with the issuer's key, so OpenSSL still verifies the chain.
"""
import datetime
import signal
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from conftest import MESHTLS, run
from proxy_util import Proxy, echo, make_pki, procs, wait_for  # noqa: F401 (fixtures)

# cryptography warns when it parses the negative serial this file makes on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a negative serial number")

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
PEM = serialization.Encoding.PEM


# ---- DER: just enough to edit a certificate's to-be-signed part -------------------------

def tlv(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + content


def parse(der):
    """The TLVs of a constructed value's content, as [(tag, content)]."""
    out, i = [], 0
    while i < len(der):
        tag, n = der[i], der[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[i:i + k], "big")
            i += k
        out.append([tag, der[i:i + n]])
        i += n
    return out


def edit(cert, issuer_key, change):
    """`cert` with its tbsCertificate fields (a list of [tag, content]) passed through
    `change`, signed again by `issuer_key` (ECDSA with SHA-256, as the builder did)."""
    (_, body), = parse(cert.public_bytes(serialization.Encoding.DER))
    tbs, alg, _sig = parse(body)
    fields = parse(tbs[1])
    change(fields)
    new_tbs = tlv(0x30, b"".join(tlv(t, c) for t, c in fields))
    sig = issuer_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    der = tlv(0x30, new_tbs + tlv(alg[0], alg[1]) + tlv(0x03, b"\x00" + sig))
    return x509.load_der_x509_certificate(der)


def field(fields, tag, nth=0):
    """Index of the nth field with `tag`."""
    return [i for i, f in enumerate(fields) if f[0] == tag][nth]


def set_serial(content):
    def change(fields):
        fields[field(fields, 0x02)][1] = content
    return change


def drop_version(fields):
    del fields[field(fields, 0xA0)]


def generalized_not_before(fields):
    v = field(fields, 0x30, 2)  # signature algorithm, issuer, validity
    nb, na = parse(fields[v][1])
    assert nb[0] == 0x17
    nb = [0x18, b"20" + nb[1]]
    fields[v][1] = tlv(*nb) + tlv(*na)


def repeat_last_extension(fields):
    e = field(fields, 0xA3)
    (_, seq), = parse(fields[e][1])
    exts = parse(seq)
    exts.append(exts[-1])
    fields[e][1] = tlv(0x30, b"".join(tlv(t, c) for t, c in exts))


# ---- certificates ---------------------------------------------------------------------

def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else x509.Name([])


def ski(key):
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def aki(issuer_key):
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())


KU_LEAF = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
KU_CA = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
PRIVATE = ObjectIdentifier("1.3.6.1.4.1.55555.1")


def build(subject, key, issuer_name, issuer_key, exts, serial=None):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(hours=1))
         .not_valid_after(NOW + datetime.timedelta(days=30)))
    for ext, crit in exts:
        b = b.add_extension(ext, crit)
    return b.sign(issuer_key, hashes.SHA256())


def ca_exts(key, issuer_key, bc_crit=True, with_ski=True, with_ku=True, extra=()):
    out = [(x509.BasicConstraints(ca=True, path_length=None), bc_crit)]
    if with_ku:
        out.append((KU_CA, True))
    if with_ski:
        out.append((ski(key), False))
    if issuer_key is not None:
        out.append((aki(issuer_key), False))
    return out + list(extra)


def leaf_exts(key, issuer_key, san=None, san_crit=False, ku=KU_LEAF, bc=True, with_aki=True,
              extra=()):
    out = [(ku, True), (EKU, False), (ski(key), False)]
    if bc:
        out.insert(0, (x509.BasicConstraints(ca=False, path_length=None), True))
    if with_aki:
        out.append((aki(issuer_key), False))
    if san is not None:
        out.append((san, san_crit))
    return out + list(extra)


class Pki:
    """A root and an intermediate made here, and a server certificate for the proxy."""

    def __init__(self, d):
        self.d = d
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = build(name("profile test root"), self.root_key, name("profile test root"),
                          self.root_key, ca_exts(self.root_key, None))
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.int = build(name("profile test intermediate"), self.int_key, self.root.subject,
                         self.root_key, ca_exts(self.int_key, self.root_key))
        (d / "root.crt").write_bytes(self.root.public_bytes(PEM))
        key = ec.generate_private_key(ec.SECP256R1())
        srv = build(name("localhost"), key, self.int.subject, self.int_key,
                    leaf_exts(key, self.int_key, x509.SubjectAlternativeName(
                        [x509.DNSName("localhost")])))
        self.write("server", [srv, self.int], key)

    def write(self, label, chain, key):
        crt, k = self.d / f"{label}.crt", self.d / f"{label}.key"
        crt.write_bytes(b"".join(c.public_bytes(PEM) for c in chain))
        k.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        k.chmod(0o600)
        return crt, k

    def leaf(self, label, cn="client", change=None, **kw):
        """A client leaf under the intermediate; `change` edits its DER."""
        key = ec.generate_private_key(ec.SECP256R1())
        kw.setdefault("san", x509.SubjectAlternativeName([x509.DNSName("client.test")]))
        c = build(name(cn), key, self.int.subject, self.int_key,
                  leaf_exts(key, self.int_key, **kw), serial=kw.get("serial"))
        if change:
            c = edit(c, self.int_key, change)
        return self.write(label, [c, self.int], key)

    def under_bad_ca(self, label, cn="bad intermediate", leaf_kw=None, **ca_kw):
        """A client leaf under a second intermediate that breaks a CA rule."""
        ikey = ec.generate_private_key(ec.SECP256R1())
        ica = build(name(cn), ikey, self.root.subject, self.root_key,
                    ca_exts(ikey, self.root_key, **ca_kw))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = build(name("client"), key, ica.subject, ikey,
                     leaf_exts(key, ikey, x509.SubjectAlternativeName(
                         [x509.DNSName("client.test")]), **(leaf_kw or {})))
        return self.write(label, [leaf, ica], key)


def raw_ext(oid, value, crit):
    return x509.UnrecognizedExtension(oid, value), crit


def nc(permitted):
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


# Each: (label, rule it breaks, how to make it).  Every chain verifies under OpenSSL.
def cases(pki):
    ku_sign = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    return [
        ("serial-negative", "rfc5280-serial-positive",
         lambda: pki.leaf("serial-negative", change=set_serial(b"\x80\x11\x22\x33"))),
        ("serial-21", "rfc5280-serial-length",
         lambda: pki.leaf("serial-21", change=set_serial(b"\x01" + bytes(range(1, 21))))),
        ("v1-with-extensions", "rfc5280-version",
         lambda: pki.leaf("v1-with-extensions", change=drop_version)),
        ("generalized-time", "rfc5280-time-encoding",
         lambda: pki.leaf("generalized-time", change=generalized_not_before)),
        ("repeated-extension", "rfc5280-extension-repeated",
         lambda: pki.leaf("repeated-extension", change=repeat_last_extension,
                          extra=[raw_ext(PRIVATE, b"\x05\x00", False)])),
        ("no-aki", "rfc5280-authority-key-id", lambda: pki.leaf("no-aki", with_aki=False)),
        ("leaf-key-cert-sign", "rfc5280-key-cert-sign-non-ca",
         lambda: pki.leaf("leaf-key-cert-sign", ku=ku_sign, bc=False)),
        ("empty-subject-san-not-critical", "rfc5280-subject-alt-name",
         lambda: pki.leaf("empty-subject-san-not-critical", cn=None, san=x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier("spiffe://test.local/svc/web")]))),
        ("empty-subject-no-san", "rfc5280-subject-alt-name",
         lambda: pki.leaf("empty-subject-no-san", cn=None, san=None)),
        ("san-no-names", "rfc5280-subject-alt-name",
         lambda: pki.leaf("san-no-names", san=None,
                          extra=[raw_ext(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x00",
                                         False)])),
        ("san-empty-dns", "rfc5280-subject-alt-name",
         lambda: pki.leaf("san-empty-dns", san=None,
                          extra=[raw_ext(ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                                         b"\x30\x02\x82\x00", False)])),
        ("san-relative-uri", "rfc5280-subject-alt-name",
         lambda: pki.leaf("san-relative-uri", san=x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier("svc/web")]))),
        ("leaf-name-constraints", "rfc5280-name-constraints",
         lambda: pki.leaf("leaf-name-constraints",
                          extra=[(nc([x509.DNSName("test")]), True)])),
        ("ca-bc-not-critical", "rfc5280-ca-basic-constraints",
         lambda: pki.under_bad_ca("ca-bc-not-critical", bc_crit=False)),
        ("ca-no-ski", "rfc5280-ca-key-id",
         lambda: pki.under_bad_ca("ca-no-ski", with_ski=False)),
        ("ca-no-key-usage", "rfc5280-ca-key-usage",
         lambda: pki.under_bad_ca("ca-no-key-usage", with_ku=False)),
        ("ca-nc-not-critical", "rfc5280-name-constraints",
         lambda: pki.under_bad_ca("ca-nc-not-critical",
                                  extra=[(nc([x509.DNSName("client.test")]), False)])),
        ("ca-empty-subject", "rfc5280-issuer-empty",
         lambda: pki.under_bad_ca("ca-empty-subject", cn=None)),
        ("leaf-path-length", "rfc5280-path-length",
         lambda: pki.leaf("leaf-path-length", bc=False,
                          extra=[raw_ext(ExtensionOID.BASIC_CONSTRAINTS,
                                         b"\x30\x03\x02\x01\x00", True)])),
        ("san-email-without-at", "rfc5280-subject-alt-name",
         lambda: pki.leaf("san-email-without-at", san=x509.SubjectAlternativeName(
             [x509.DNSName("client.test"), x509.RFC822Name("nobody")]))),
        ("ca-nc-empty", "rfc5280-name-constraints",
         lambda: pki.under_bad_ca("ca-nc-empty",
                                  extra=[raw_ext(ExtensionOID.NAME_CONSTRAINTS, b"\x30\x00",
                                                 True)])),
    ]


# ---- the proxy and a client ------------------------------------------------------------

def server(procs, echo, crt, key, ca, *extra):
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", crt, "--key", key,
              "--cacert", ca, "--allow-all", *extra)
    procs.append(p)
    return p


def attempt(port, crt, key):
    """One connection presenting `crt`/`key`: the echo of b"ping\\n", or the error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # this test is about the server's view of the client
    ctx.load_cert_chain(str(crt), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"ping\n")
                data = s.recv(10)
                return data if data else "closed"
    except (ssl.SSLError, OSError) as e:
        return str(e)


def alert_of(port, crt, key):
    """The error a client presenting `crt`/`key` reads after its handshake.  It sends
    nothing: bytes the server never reads would make its close a reset, which can overtake
    the alert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(crt), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            try:
                return repr(s.recv(10))
            except ssl.SSLError as e:
                return str(e)


def reasons(p):
    return {k.split('"')[1]: v for k, v in p.metrics().items()
            if k.startswith("meshtls_tls_handshake_errors_total")}


def test_each_rule_broken_once_is_refused_and_off_accepts_it(procs, echo, tmp_path):
    pki = Pki(tmp_path)
    on = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
                tmp_path / "root.crt")
    off = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
                 tmp_path / "root.crt", "--verify-profile", "off")
    good = pki.leaf("good")
    assert attempt(on.port, *good) == b"ping\n", on.log()
    made = [(label, rule, make()) for label, rule, make in cases(pki)]
    for n, (label, rule, (crt, key)) in enumerate(made, 1):
        # OpenSSL alone accepts it: the chain is otherwise good
        assert attempt(off.port, crt, key) == b"ping\n", (label, off.log())
        got = attempt(on.port, crt, key)
        assert got != b"ping\n", (label, rule)
        assert "BAD_CERTIFICATE" in got.upper() or "closed" in got or "reset" in got, (label, got)
        wait_for(lambda: reasons(on)["profile"] == n, what=f"{label} counted as profile")
        wait_for(lambda: f"rule={rule}" in on.log(), what=f"{label} logged with {rule}")
    assert reasons(off)["profile"] == 0
    m = on.metrics()
    assert m['meshtls_cert_validation_failures_total{reason="profile"}'] == len(made)
    # the alert says what is wrong: the certificate (not "handshake failure")
    assert "ALERT_BAD_CERTIFICATE" in alert_of(on.port, *made[0][2])
    log = on.log()
    line = next(ln for ln in log.splitlines() if "rule=rfc5280-ca-key-id" in ln)
    assert 'the CA certificate (subject \\"CN=bad intermediate\\"' in line or \
        "the CA certificate (subject" in line, line
    assert "reason=profile" in line and "RFC 5280 4.2.1.2" in line, line
    assert 'subject="CN=client"' in line, line  # the presented leaf, as for other refusals


def test_a_refused_chain_is_not_remembered_as_verified(procs, echo, tmp_path):
    """The verified-chain cache never holds a chain the profile refused: the same chain is
    refused every time, and a good one still passes after it."""
    pki = Pki(tmp_path)
    p = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt")
    bad = pki.under_bad_ca("cached", with_ski=False)
    for i in range(1, 4):
        assert attempt(p.port, *bad) != b"ping\n"
        wait_for(lambda: reasons(p)["profile"] == i, what=f"refusal {i} counted")
    assert attempt(p.port, *pki.leaf("good")) == b"ping\n"


def test_meshtls_ca_chains_and_crls_pass(procs, echo, tmp_path):
    d = make_pki(tmp_path)
    run("ca", "crl", "--dir", d / "ca", "--out", tmp_path / "crl.pem", check=True)
    c = d / "certs"
    p = server(procs, echo, c / "api.crt", c / "api.key", c / "ca.crt", "--crl",
               tmp_path / "crl.pem")
    for svc in ("web", "evil"):
        assert attempt(p.port, c / f"{svc}.crt", c / f"{svc}.key") == b"ping\n", p.log()
    assert reasons(p)["profile"] == 0


def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def test_openssl_req_and_x509_with_the_usual_extensions_pass(procs, echo, tmp_path):
    """A root from `openssl req -x509` (its v3_ca section), an intermediate and a leaf
    signed by `openssl x509 -req` with the extensions the tutorials give."""
    (tmp_path / "ext.cnf").write_text(
        "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
        "[leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, "
        "keyEncipherment\nextendedKeyUsage = clientAuth, serverAuth\n"
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nsubjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n")
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec_key, "-keyout", "root.key", "-out", "root.crt", "-days", "30",
            "-subj", "/O=Example/CN=Example Root", "-extensions", "v3_ca", cwd=tmp_path)
    openssl("req", "-new", *ec_key, "-keyout", "int.key", "-out", "int.csr",
            "-subj", "/O=Example/CN=Example Intermediate", cwd=tmp_path)
    openssl("x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey", "root.key",
            "-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-extensions", "ca",
            "-out", "int.crt", cwd=tmp_path)
    for who in ("server", "client"):
        openssl("req", "-new", *ec_key, "-keyout", f"{who}.key", "-out", f"{who}.csr",
                "-subj", f"/O=Example/CN={who}", cwd=tmp_path)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "int.crt", "-CAkey", "int.key",
                "-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-extensions", "leaf",
                "-out", f"{who}.leaf", cwd=tmp_path)
        chain = (tmp_path / f"{who}.leaf").read_bytes() + (tmp_path / "int.crt").read_bytes()
        (tmp_path / f"{who}.crt").write_bytes(chain)
        (tmp_path / f"{who}.key").chmod(0o600)
    p = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt")
    assert attempt(p.port, tmp_path / "client.crt", tmp_path / "client.key") == b"ping\n", \
        p.log()
    assert reasons(p)["profile"] == 0


def test_a_cert_manager_shaped_chain_passes(procs, echo, tmp_path):
    """What cert-manager writes: a self-signed root CA with a subjectKeyIdentifier, an
    issuer CA under it, and a leaf with an empty subject, a critical URI SAN, digital
    signature + key encipherment, serverAuth + clientAuth, no subjectKeyIdentifier."""
    pki = Pki(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    ku = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    leaf = build(x509.Name([]), key, pki.int.subject, pki.int_key, [
        (x509.BasicConstraints(ca=False, path_length=None), True), (ku, True), (EKU, False),
        (aki(pki.int_key), False),
        (x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/web")]), True),
    ], serial=x509.random_serial_number() >> 32)
    crt, k = pki.write("cert-manager", [leaf, pki.int], key)
    p = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt")
    assert attempt(p.port, crt, k) == b"ping\n", p.log()
    assert reasons(p)["profile"] == 0


def crl(pki, tmp_path, label, with_aki=True, with_number=True):
    b = (x509.CertificateRevocationListBuilder().issuer_name(pki.int.subject)
         .last_update(NOW - datetime.timedelta(hours=1))
         .next_update(NOW + datetime.timedelta(days=1)))
    if with_aki:
        b = b.add_extension(aki(pki.int_key), False)
    if with_number:
        b = b.add_extension(x509.CRLNumber(7), False)
    out = tmp_path / f"{label}.pem"
    pem = b.sign(pki.int_key, hashes.SHA256()).public_bytes(PEM)
    root = (x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject)
            .last_update(NOW - datetime.timedelta(hours=1))
            .next_update(NOW + datetime.timedelta(days=1))
            .add_extension(aki(pki.root_key), False).add_extension(x509.CRLNumber(1), False))
    out.write_bytes(pem + root.sign(pki.root_key, hashes.SHA256()).public_bytes(PEM))
    return out


@pytest.mark.parametrize("label,rule,kw", [
    ("crl-no-aki", "rfc5280-crl-authority-key-id", {"with_aki": False}),
    ("crl-no-number", "rfc5280-crl-number", {"with_number": False}),
])
def test_a_crl_that_breaks_the_profile_is_refused_at_start(tmp_path, label, rule, kw):
    pki = Pki(tmp_path)
    bad = crl(pki, tmp_path, label, **kw)
    r = subprocess.run([MESHTLS, "proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--cert",
                        tmp_path / "server.crt", "--key", tmp_path / "server.key", "--cacert",
                        tmp_path / "root.crt", "--allow-all", "--crl", bad],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert rule in r.stderr and f"CRL 1 of {bad}" in r.stderr, r.stderr


def test_a_conforming_crl_loads_and_off_takes_a_bad_one(procs, echo, tmp_path):
    pki = Pki(tmp_path)
    good = crl(pki, tmp_path, "good")
    p = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt", "--crl", good)
    assert attempt(p.port, *pki.leaf("good")) == b"ping\n", p.log()
    bad = crl(pki, tmp_path, "bad", with_number=False)
    q = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt", "--crl", bad, "--verify-profile", "off")
    assert attempt(q.port, *pki.leaf("good2")) == b"ping\n", q.log()


def test_a_reload_to_a_crl_that_breaks_the_profile_keeps_the_old_one(procs, echo, tmp_path):
    pki = Pki(tmp_path)
    path = tmp_path / "crl.pem"
    path.write_bytes(crl(pki, tmp_path, "good").read_bytes())
    p = server(procs, echo, tmp_path / "server.crt", tmp_path / "server.key",
               tmp_path / "root.crt", "--crl", path, "--no-watch")
    client = pki.leaf("client")
    assert attempt(p.port, *client) == b"ping\n", p.log()
    path.write_bytes(crl(pki, tmp_path, "bad", with_aki=False).read_bytes())
    p.signal(signal.SIGHUP)
    wait_for(lambda: p.metrics()['meshtls_reloads_total{result="failure"}'] == 1,
             what="reload refused")
    assert "rfc5280-crl-authority-key-id" in p.log() and "keeping the current" in p.log()
    assert attempt(p.port, *client) == b"ping\n", p.log()


class BadServer:
    """A TLS echo server on loopback presenting `crt`/`key`; serves until closed."""

    def __init__(self, crt, key):
        import threading
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(crt), str(key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.done = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as s:
                    data = s.recv(100)
                    if data:
                        s.sendall(data)
            except (ssl.SSLError, OSError):
                pass

    def close(self):
        self.done = True
        self.thread.join(timeout=5)
        self.sock.close()


def through(port):
    """b"ping\\n" through a `proxy client` on `port`, or what came back instead."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"ping\n")
            return s.recv(10)
    except OSError as e:
        return str(e)


def test_proxy_client_refuses_a_server_chain_that_breaks_the_profile(procs, tmp_path):
    pki = Pki(tmp_path)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost")])
    srv = BadServer(*pki.leaf("bad-server", cn="localhost", san=san, with_aki=False))
    try:
        client = pki.leaf("client")
        args = ("--target", f"127.0.0.1:{srv.port}", "--cert", client[0], "--key", client[1],
                "--cacert", tmp_path / "root.crt", "--server-name", "localhost")
        on = Proxy("client", *args)
        procs.append(on)
        off = Proxy("client", *args, "--verify-profile", "off")
        procs.append(off)
        assert through(off.port) == b"ping\n", off.log()
        assert through(on.port) != b"ping\n"
        wait_for(lambda: "rule=rfc5280-authority-key-id" in on.log(), what="refusal logged")
        assert "TLS handshake with target failed" in on.log()
        assert reasons(on)["profile"] == 1
    finally:
        srv.close()
