"""`meshtls ca`: the parts of a certificate's life not covered by test_ca.py:
re-registration, CSR-issued certificates through rotation, CRL numbering,
list output, option bounds, and store/files consistency when a write fails."""
import json
import re
import sqlite3
import subprocess

import pytest

from conftest import run, snapshot


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "ca"
    run("ca", "init", "--dir", d, "--trust-domain", "example.org", check=True)
    run("ca", "register", "--dir", d, "api", "--dns", "api.internal", check=True)
    return d


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)


def rows(ca):
    return json.loads(run("ca", "list", "--dir", ca, "--json", check=True).stdout)


def test_register_again_updates(ca, tmp_path):
    r = run("ca", "register", "--dir", ca, "api", "--dns", "api.internal", "--dns", "api2",
            check=True)
    assert r.stdout.startswith("updated service api")
    run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "o", check=True)
    t = openssl("x509", "-in", tmp_path / "o" / "api.crt", "-noout", "-ext",
                "subjectAltName").stdout
    assert "DNS:api2" in t and "URI:spiffe://example.org/svc/api" in t
    r = run("ca", "register", "--dir", ca, "web", "--spiffe-id", "spiffe://example.org/svc/api")
    assert r.returncode == 1 and "already registered to another service" in r.stderr


def test_rotate_csr_issued_resigns_same_key(ca, tmp_path):
    key, csr, out = tmp_path / "k.pem", tmp_path / "r.csr", tmp_path / "out"
    assert openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=api").returncode == 0
    run("ca", "issue", "--dir", ca, "api", "--out", out, "--csr", csr, "--days", "3",
        check=True)
    first = (out / "api.crt").read_text()
    r = run("ca", "rotate", "--dir", ca, "api", check=True)
    assert "rotated 1" in r.stdout
    assert (out / "api.crt").read_text() != first
    assert not (out / "api.key").exists()
    pub = openssl("pkey", "-in", key, "-pubout").stdout
    assert openssl("x509", "-in", out / "api.crt", "-noout", "-pubkey").stdout == pub
    # the service's own key still pairs with the rotated certificate
    assert openssl("verify", "-CAfile", out / "ca.crt", "-untrusted", ca / "intermediate.crt",
                   out / "api.crt").returncode == 0


def test_rotate_only_named_services_and_unknown(ca, tmp_path):
    run("ca", "register", "--dir", ca, "web", check=True)
    run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "o", "--days", "5", check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", tmp_path / "o", "--days", "5", check=True)
    r = run("ca", "rotate", "--dir", ca, "web", check=True)
    assert "rotated 1" in r.stdout and "web" in r.stdout
    assert sorted((x["service"], x["status"]) for x in rows(ca)) == [
        ("api", "active"), ("web", "active"), ("web", "superseded")]
    before = snapshot(tmp_path)
    r = run("ca", "rotate", "--dir", ca, "ghost")
    assert r.returncode == 1 and "'ghost' is not registered" in r.stderr
    assert snapshot(tmp_path) == before


def test_crl_number_increases_and_lists_reasons(ca, tmp_path):
    run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "o", check=True)
    serial = rows(ca)[0]["serial"]
    run("ca", "revoke", "--dir", ca, "api", "--reason", "cessationOfOperation", check=True)
    nums = []
    for _ in range(2):
        run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
        text = openssl("crl", "-in", tmp_path / "crl.pem", "-noout", "-text").stdout
        nums.append(int(re.search(r"X509v3 CRL Number: *\n *(\d+)", text).group(1)))
        assert "Cessation Of Operation" in text
        assert serial.upper() in text.replace(":", "").upper()
    assert nums[1] == nums[0] + 1
    pem = (tmp_path / "crl.pem").read_text()
    assert pem.count("BEGIN X509 CRL") == 2  # intermediate's, then the root's
    assert rows(ca)[0]["status"] == "revoked" and rows(ca)[0]["reason"] == "cessationOfOperation"


def test_list_text(ca, tmp_path):
    r = run("ca", "list", "--dir", ca, check=True)
    assert "no certificates issued yet" in r.stdout
    run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "o", check=True)
    r = run("ca", "list", "--dir", ca, check=True)
    header, line = r.stdout.splitlines()[:2]
    assert header.split()[:2] == ["SERVICE", "SERIAL"] and "DAYS LEFT" in header
    assert line.split()[0] == "api" and line.split()[-1] == "active"


@pytest.mark.parametrize("args,want", [
    (["issue", "api", "--out", "o", "--days", "0"], "--days"),
    (["issue", "api", "--out", "o", "--days", "826"], "--days"),
    (["issue", "api", "--out", "o", "--days", "ten"], "--days"),
    (["issue", "api"], "--out"),
    (["rotate", "--within-days", "-1"], "--within-days"),
    (["revoke"], "--serial HEX or one SERVICE"),
    (["crl"], "--out FILE"),
    (["init"], "--trust-domain"),
    (["register"], "SERVICE"),
])
def test_usage_errors_exit_2(ca, tmp_path, args, want):
    before = snapshot(tmp_path)
    r = run("ca", args[0], "--dir", ca, *args[1:])
    assert r.returncode == 2 and want in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def test_every_subcommand_has_help():
    for sub in ("init", "register", "issue", "rotate", "revoke", "crl", "list"):
        r = run("ca", sub, "--help")
        assert r.returncode == 0 and "usage: meshtls ca" in r.stdout, sub


def test_revoke_bad_inputs(ca, tmp_path):
    before = snapshot(tmp_path)
    r = run("ca", "revoke", "--dir", ca, "--serial", "abcd")
    assert r.returncode == 1 and "no certificate with serial abcd" in r.stderr
    r = run("ca", "revoke", "--dir", ca, "--serial", "zz")
    assert r.returncode == 1 and "not a hex serial" in r.stderr
    r = run("ca", "revoke", "--dir", ca, "api", "--reason", "bored")
    assert r.returncode == 1 and "--reason 'bored'" in r.stderr
    r = run("ca", "revoke", "--dir", ca, "api")
    assert r.returncode == 1 and "no unexpired, unrevoked certificate" in r.stderr
    assert snapshot(tmp_path) == before


def test_failed_write_changes_nothing(ca, tmp_path):
    """A file that cannot be replaced (here OUTDIR/ca.crt is a directory) fails the
    issue after the key and chain were staged: the old files come back and the
    store has no trace of the certificate."""
    out = tmp_path / "out"
    run("ca", "issue", "--dir", ca, "api", "--out", out, check=True)
    (out / "ca.crt").unlink()
    (out / "ca.crt").mkdir()
    before = snapshot(tmp_path)
    r = run("ca", "issue", "--dir", ca, "api", "--out", out)
    assert r.returncode == 1 and "ca.crt" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in out.iterdir()) == ["api.crt", "api.key", "ca.crt"]
    db = sqlite3.connect(ca / "meshtls.db")
    assert db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action = 'issue'").fetchone()[0] == 1
    # rotation into that directory fails the same way, and changes nothing either
    before = snapshot(tmp_path)
    r = run("ca", "rotate", "--dir", ca, "--within-days", "100", "--days", "200")
    assert r.returncode == 1 and snapshot(tmp_path) == before
