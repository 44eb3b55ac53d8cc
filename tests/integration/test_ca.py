"""`meshtls ca` and `meshtls dev`: the 3-tier PKI, checked with openssl, and
every bad input: a clear message, a non-zero exit, nothing changed on disk."""
import json
import sqlite3
import stat
import subprocess
import threading

import pytest

from conftest import run, snapshot


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "ca"
    run("ca", "init", "--dir", d, "--trust-domain", "example.org", check=True)
    run("ca", "register", "--dir", d, "billing", "--dns", "billing.internal", "--ip", "10.1.2.3",
        "--ip", "::1", check=True)
    return d


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)


def inspect(path):
    return json.loads(run("cert", "inspect", "--json", path, check=True).stdout)


def test_init_layout_and_permissions(tmp_path):
    d = tmp_path / "ca"
    r = run("ca", "init", "--dir", d, "--trust-domain", "example.org", check=True)
    assert "move it offline" in r.stdout
    mode = lambda p: stat.S_IMODE((d / p).stat().st_mode)  # noqa: E731
    assert mode("root.key") == 0o400
    assert mode("intermediate.key") == 0o600
    root, inter = inspect(d / "root.crt")[0], inspect(d / "intermediate.crt")[0]
    assert root["is_ca"] and inter["is_ca"]
    assert 3640 < root["days_left"] <= 3650 and 1815 < inter["days_left"] <= 1825
    t = openssl("x509", "-in", d / "intermediate.crt", "-noout", "-text").stdout
    assert "pathlen:0" in t
    assert openssl("verify", "-CAfile", d / "root.crt", d / "intermediate.crt").returncode == 0
    db = sqlite3.connect(d / "meshtls.db")
    assert db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] >= 1
    assert db.execute("SELECT action FROM audit").fetchall() == [("init",)]


@pytest.mark.parametrize("kt,name", [("ec-p384", "EC P-384"), ("rsa-2048", "RSA 2048"),
                                     ("ed25519", "ED25519")])
def test_key_types(tmp_path, kt, name):
    d = tmp_path / "ca"
    run("ca", "init", "--dir", d, "--trust-domain", "example.org", "--key-type", kt, check=True)
    run("ca", "register", "--dir", d, "svc", check=True)
    run("ca", "issue", "--dir", d, "svc", "--out", tmp_path / "o", check=True)
    assert inspect(tmp_path / "o" / "svc.crt")[0]["key_type"] == name
    assert openssl("verify", "-CAfile", tmp_path / "o" / "ca.crt", "-untrusted",
                   d / "intermediate.crt", tmp_path / "o" / "svc.crt").returncode == 0


def test_issue_leaf(ca, tmp_path):
    out = tmp_path / "out"
    r = run("ca", "issue", "--dir", ca, "billing", "--out", out, check=True)
    assert "billing.key" in r.stdout
    leaf, inter = inspect(out / "billing.crt")
    assert leaf["cn"] == "billing" and not leaf["is_ca"] and inter["is_ca"]
    assert leaf["spiffe_id"] == "spiffe://example.org/svc/billing"
    assert leaf["dns"] == ["billing.internal"] and leaf["ip"] == ["10.1.2.3", "::1"]
    assert 88 <= leaf["days_left"] <= 90
    assert len(leaf["serial"]) == 32  # 128-bit random serial
    assert stat.S_IMODE((out / "billing.key").stat().st_mode) == 0o600
    t = openssl("x509", "-in", out / "billing.crt", "-noout", "-text").stdout
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in t
    for purpose in ("sslclient", "sslserver"):
        assert openssl("verify", "-purpose", purpose, "-CAfile", out / "ca.crt", "-untrusted",
                       ca / "intermediate.crt", out / "billing.crt").returncode == 0
    r = run("cert", "verify", "--ca", out / "ca.crt", out / "billing.crt")
    assert r.returncode == 0 and "trusted" in r.stdout
    assert run("ca", "issue", "--dir", ca, "billing", "--out", out, "--days", "7",
               check=True).returncode == 0
    assert inspect(out / "billing.crt")[0]["days_left"] in (6, 7)


def test_serials_unique(ca, tmp_path):
    serials = set()
    for i in range(20):
        run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o", check=True)
        serials.add(inspect(tmp_path / "o" / "billing.crt")[0]["serial"])
    assert len(serials) == 20


def test_csr_signing(ca, tmp_path):
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    assert openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=billing",
                   "-addext", "subjectAltName=DNS:billing.internal,URI:spiffe://example.org/svc/"
                   "billing").returncode == 0
    out = tmp_path / "out"
    r = run("ca", "issue", "--dir", ca, "billing", "--out", out, "--csr", csr, check=True)
    assert not (out / "billing.key").exists()
    leaf = inspect(out / "billing.crt")[0]
    assert leaf["spiffe_id"] == "spiffe://example.org/svc/billing"
    assert openssl("x509", "-in", out / "billing.crt", "-noout", "-pubkey").stdout == \
        openssl("pkey", "-in", key, "-pubout").stdout
    assert "billing" in r.stdout


def test_rotate_overlap_and_idempotence(ca, tmp_path):
    out = tmp_path / "out"
    run("ca", "issue", "--dir", ca, "billing", "--out", out, "--days", "10", check=True)
    old = inspect(out / "billing.crt")[0]["serial"]
    r = run("ca", "rotate", "--dir", ca, "--within-days", "14", check=True)
    assert "rotated 1" in r.stdout
    new = inspect(out / "billing.crt")[0]
    assert new["serial"] != old and 88 <= new["days_left"] <= 90
    rows = {c["serial"]: c for c in json.loads(run("ca", "list", "--dir", ca, "--json",
                                                   check=True).stdout)}
    assert rows[old]["status"] == "superseded" and rows[new["serial"]]["status"] == "active"
    before = snapshot(out)
    r = run("ca", "rotate", "--dir", ca, "--within-days", "14", check=True)
    assert "nothing to rotate" in r.stdout
    assert snapshot(out) == before


def test_revoke_crl_and_replace(ca, tmp_path):
    out = tmp_path / "out"
    run("ca", "issue", "--dir", ca, "billing", "--out", out, check=True)
    revoked = tmp_path / "revoked.crt"
    revoked.write_bytes((out / "billing.crt").read_bytes())
    serial = inspect(revoked)[0]["serial"]
    r = run("ca", "revoke", "--dir", ca, "--serial", serial.upper(), "--reason", "keyCompromise",
            "--replace", check=True)
    assert "replacement" in r.stdout
    assert inspect(out / "billing.crt")[0]["serial"] != serial
    run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
    crl_text = openssl("crl", "-in", tmp_path / "crl.pem", "-noout", "-text").stdout
    assert serial.upper() in crl_text.replace(":", "").upper()
    assert "Key Compromise" in crl_text
    v = openssl("verify", "-crl_check_all", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                out / "ca.crt", "-untrusted", ca / "intermediate.crt", revoked)
    assert v.returncode != 0 and "revoked" in v.stdout + v.stderr
    assert openssl("verify", "-crl_check_all", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                   out / "ca.crt", "-untrusted", ca / "intermediate.crt",
                   out / "billing.crt").returncode == 0
    r = run("cert", "verify", "--ca", out / "ca.crt", "--crl", tmp_path / "crl.pem", revoked)
    assert r.returncode == 1 and "revoked" in r.stdout
    audit = sqlite3.connect(ca / "meshtls.db").execute("SELECT action FROM audit").fetchall()
    assert ("revoke",) in audit and ("replace",) in audit and ("crl",) in audit
    rows = json.loads(run("ca", "list", "--dir", ca, "--json", check=True).stdout)
    assert [x["status"] for x in rows] == ["revoked", "active"]


def test_revoke_service(ca, tmp_path):
    run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o", check=True)
    run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o", check=True)
    r = run("ca", "revoke", "--dir", ca, "billing", check=True)
    assert "revoked 2" in r.stdout


def test_help_everywhere():
    for args in (["--help"], ["ca", "--help"], ["ca", "issue", "--help"], ["cert", "--help"],
                 ["dev", "--help"], ["config", "--help"], ["proxy", "--help"]):
        r = run(*args)
        assert r.returncode == 0 and "usage" in r.stdout, args


# ---- bad input: message, non-zero exit, nothing changed on disk -------------------------

def _unchanged(root, *args, want, code=1):
    before = snapshot(root)
    r = run(*args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert want in r.stderr, r.stderr
    assert snapshot(root) == before


def test_second_init_refused(ca):
    _unchanged(ca, "ca", "init", "--dir", ca, "--trust-domain", "other.org",
               want="already holds a CA")


def test_unknown_service(ca, tmp_path):
    _unchanged(ca.parent, "ca", "issue", "--dir", ca, "ghost", "--out", tmp_path / "o",
               want="service 'ghost' is not registered")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sid,want", [
    ("spiffe://Example.org/svc/x", "lower case"), ("spiffe://example.org/a//b", "empty segment"),
    ("spiffe://example.org/x?y", "query"), ("http://example.org/x", "spiffe://"),
    ("spiffe://other.org/svc/x", "trust domain 'other.org'")])
def test_invalid_spiffe_id(ca, sid, want):
    _unchanged(ca, "ca", "register", "--dir", ca, "svc", "--spiffe-id", sid, want=want)


@pytest.mark.parametrize("td,want", [("Example.org", "lower case"), ("ex ample", "invalid"),
                                     ("spiffe://example.org", "without spiffe://"),
                                     ("example.org:80", "port")])
def test_invalid_trust_domain(tmp_path, td, want):
    _unchanged(tmp_path, "ca", "init", "--dir", tmp_path / "ca", "--trust-domain", td, want=want)
    assert not (tmp_path / "ca").exists()


def test_invalid_registration_values(ca):
    _unchanged(ca, "ca", "register", "--dir", ca, "Bad Name", want="service name")
    _unchanged(ca, "ca", "register", "--dir", ca, "svc", "--ip", "300.1.1.1", want="--ip")
    _unchanged(ca, "ca", "register", "--dir", ca, "svc", "--dns", "bad..name", want="--dns")


def test_csr_asking_too_much(ca, tmp_path):
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=billing",
            "-addext", "subjectAltName=DNS:admin.internal")
    _unchanged(ca.parent, "ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o",
               "--csr", csr, want="asks for admin.internal")
    openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=admin")
    _unchanged(ca.parent, "ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o",
               "--csr", csr, want="asks for CN 'admin'")
    csr.write_text("-----BEGIN CERTIFICATE REQUEST-----\nbm9wZQ==\n-----END CERTIFICATE REQUEST"
                   "-----\n")
    _unchanged(ca.parent, "ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o",
               "--csr", csr, want="not a PEM certificate request")


def test_missing_dir_and_missing_files(tmp_path):
    _unchanged(tmp_path, "ca", "list", "--dir", tmp_path / "nope", want="no CA in")
    _unchanged(tmp_path, "ca", "list", want="--dir DIR is required", code=2)
    _unchanged(tmp_path, "cert", "inspect", tmp_path / "missing.crt", want="missing.crt", code=2)


def test_garbage_store(ca, tmp_path):
    (ca / "meshtls.db").write_bytes(b"this is not a database" * 100)
    _unchanged(ca.parent, "ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o",
               want="meshtls.db")


def test_store_that_is_a_directory(tmp_path):
    d = tmp_path / "ca"
    run("ca", "init", "--dir", d, "--trust-domain", "example.org", check=True)
    (d / "meshtls.db").unlink()
    (d / "meshtls.db").mkdir()
    _unchanged(tmp_path, "ca", "list", "--dir", d, want="not a regular file")


def test_locked_store(ca, tmp_path):
    # Another process holds the write lock (in this process, reading the file for the
    # snapshot would drop a POSIX lock, so the holder is a child process).
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c",
         "import sqlite3, sys\n"
         f"db = sqlite3.connect({str(ca / 'meshtls.db')!r}, isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        _unchanged(ca.parent, "ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o",
                   want="locked by another process")
    finally:
        holder.stdin.close()
        holder.wait(10)


@pytest.mark.parametrize("content,want", [
    ("-----BEGIN CERTIFICATE-----\nMIIB!!\n-----END CERTIFICATE-----\n", "malformed PEM"),
    ("hello\n", "no PEM certificate")])
def test_malformed_pem(tmp_path, content, want):
    f = tmp_path / "bad.crt"
    f.write_text(content)
    for args in (["cert", "inspect", f], ["cert", "check", f, "--min-days", "1"]):
        _unchanged(tmp_path, *args, want=want, code=2)


def test_cert_check_exit_codes(ca, tmp_path):
    run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o", "--days", "10",
        check=True)
    f = tmp_path / "o" / "billing.crt"
    r = run("cert", "check", f, "--min-days", "5")
    assert r.returncode == 0 and "OK" in r.stdout
    r = run("cert", "check", f, "--min-days", "30")
    assert r.returncode == 1 and "EXPIRING" in r.stdout and "fewer than the 30" in r.stdout


def test_wrong_ca_verify(ca, tmp_path):
    other = tmp_path / "other"
    run("ca", "init", "--dir", other, "--trust-domain", "other.org", check=True)
    run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / "o", check=True)
    r = run("cert", "verify", "--ca", other / "ca.crt", tmp_path / "o" / "billing.crt")
    assert r.returncode == 1 and "NOT TRUSTED" in r.stdout


def test_concurrent_issues_are_serialized(ca, tmp_path):
    results = []

    def go(i):
        results.append(run("ca", "issue", "--dir", ca, "billing", "--out", tmp_path / f"o{i}"))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    rows = json.loads(run("ca", "list", "--dir", ca, "--json", check=True).stdout)
    assert len(rows) == 4 and sum(x["status"] == "active" for x in rows) == 1
