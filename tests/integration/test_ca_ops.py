"""Issue 9, sections 1 and 2: PKI operations a cron job can trust, and the
offline root's duties.  Every CA command is the real `meshtls` binary; chains
are checked with `openssl verify` and a real handshake through
`meshtls proxy server`.  Loopback only; every process started here is stopped
by PID."""
import datetime
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess

import pytest

from conftest import MESHTLS, run, snapshot
from proxy_util import EchoServer, Proxy, wait_for


def ok(*args, cwd=None):
    """`meshtls ARGS` that must succeed, optionally from another directory."""
    p = subprocess.run([MESHTLS, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       timeout=60)
    assert p.returncode == 0, f"meshtls {args} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def meshtls_in(cwd, *args, env=None):
    return subprocess.run([MESHTLS, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=60, env=env)


def serial_of(path):
    return json.loads(run("cert", "inspect", "--json", path, check=True).stdout)[0]["serial"]


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "ca"
    run("ca", "init", "--dir", d, "--trust-domain", "ops.test", check=True)
    run("ca", "register", "--dir", d, "api", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "register", "--dir", d, "web", check=True)
    return d


# ---- 1. rotation a cron job can trust ---------------------------------------------------


def test_relative_out_is_stored_absolute_and_rotate_from_elsewhere(ca, tmp_path):
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    ok("ca", "issue", "--dir", ca, "web", "--out", "./certs", "--days", "10", cwd=work)
    old = serial_of(work / "certs" / "web.crt")
    db = sqlite3.connect(ca / "meshtls.db")
    assert db.execute("SELECT out_dir FROM certificates").fetchone()[0] == str(work / "certs")
    r = ok("ca", "rotate", "--dir", ca, "--within-days", "14", "--days", "90", cwd=other)
    assert str(work / "certs") in r.stdout
    assert not (other / "certs").exists(), "rotate created ./certs in its own directory"
    new = serial_of(work / "certs" / "web.crt")
    assert new != old
    assert db.execute("SELECT serial FROM certificates WHERE status = 'active'").fetchone()[0] \
        == new


def test_rotate_from_crons_empty_environment(ca, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ok("ca", "issue", "--dir", ca, "web", "--out", "certs", "--days", "5", cwd=work)
    old = serial_of(work / "certs" / "web.crt")
    # cron: no HOME, no PATH, working directory "/" (or $HOME)
    r = subprocess.run(["env", "-i", MESHTLS, "ca", "rotate", "--dir", str(ca)],
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    assert serial_of(work / "certs" / "web.crt") != old
    assert "rotated 1 certificate" in r.stdout


def test_legacy_relative_path_migrated_or_refused_naming_it(ca, tmp_path):
    """A store written before absolute paths holds 'certs': rotate run elsewhere refuses
    (naming the path and the fix) and writes nothing; run where issue ran it migrates."""
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    ok("ca", "issue", "--dir", ca, "web", "--out", "certs", "--days", "5", cwd=work)
    db = sqlite3.connect(ca / "meshtls.db")
    db.execute("UPDATE certificates SET out_dir = 'certs'")
    db.commit()
    r = meshtls_in(work, "ca", "list", "--dir", ca)
    assert r.returncode == 0 and "relative directory 'certs'" in r.stderr
    before = snapshot(tmp_path)
    r = meshtls_in(other, "ca", "rotate", "--dir", ca)
    assert r.returncode == 1
    assert "relative directory 'certs'" in r.stderr and "--out /ABSOLUTE/DIR" in r.stderr
    assert str(other / "certs" / "web.crt") in r.stderr
    assert snapshot(tmp_path) == before and not (other / "certs").exists()
    r = meshtls_in(work, "ca", "rotate", "--dir", ca)
    assert r.returncode == 0, r.stderr
    assert f"is now recorded as {work / 'certs'}" in r.stderr
    assert {row[0] for row in db.execute("SELECT out_dir FROM certificates")} == \
        {str(work / "certs")}


def test_rotate_refuses_a_vanished_directory_and_rotates_the_others(ca, tmp_path):
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    run("ca", "issue", "--dir", ca, "web", "--out", gone, "--days", "5", check=True)
    run("ca", "issue", "--dir", ca, "api", "--out", kept, "--days", "5", check=True)
    old_api = serial_of(kept / "api.crt")
    shutil.rmtree(gone)
    r = run("ca", "rotate", "--dir", ca)
    assert r.returncode == 1
    assert f"{gone}, which no longer exists" in r.stderr and f"mkdir -p {gone}" in r.stderr
    assert "1 certificate(s) not rotated" in r.stderr
    assert not gone.exists()
    assert serial_of(kept / "api.crt") != old_api  # the others are not held back
    gone.mkdir()  # the fix the message names
    r = run("ca", "rotate", "--dir", ca)
    assert r.returncode == 0 and (gone / "web.crt").exists(), r.stderr


def test_rotate_force(ca, tmp_path):
    out = tmp_path / "o"
    run("ca", "issue", "--dir", ca, "api", "--out", out, check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    a, w = serial_of(out / "api.crt"), serial_of(out / "web.crt")
    r = run("ca", "rotate", "--dir", ca, check=True)
    assert "nothing to rotate" in r.stdout
    r = run("ca", "rotate", "--dir", ca, "--force", "api", check=True)
    assert "rotated 1 certificate" in r.stdout
    assert serial_of(out / "api.crt") != a and serial_of(out / "web.crt") == w
    r = run("ca", "rotate", "--dir", ca, "--force", check=True)
    assert "rotated 2 certificate" in r.stdout


@pytest.mark.parametrize("args,want", [
    (["rotate", "--days", "10", "--within-days", "14"], "--days 10 must be longer"),
    (["rotate", "--within-days", "3651"], "--within-days"),
    (["rotate", "--within-days", "-3"], "--within-days"),
    (["rotate", "--days", "0"], "--days"),
    (["rotate", "--days", "826"], "--days"),
    (["issue", "api", "--out", "o", "--days", "100000"], "--days"),
    (["list", "--expiring-within", "-1"], "--expiring-within"),
    (["list", "--status", "alive"], "--status"),
    (["unregister"], "SERVICE"),
    (["renew-intermediate"], "--root-key"),
    (["root-crl", "--root-key", "k", "--days", "0"], "--days"),
    (["renew-intermediate", "--root-key", "k", "--days", "3651"], "--days"),
    (["crl"], "--out FILE"),
])
def test_out_of_range_values_exit_2(ca, tmp_path, args, want):
    before = snapshot(tmp_path)
    r = meshtls_in(tmp_path, "ca", args[0], "--dir", ca, *args[1:])
    assert r.returncode == 2 and want in r.stderr, (r.returncode, r.stderr)
    assert snapshot(tmp_path) == before


def test_issue_says_the_end_date(ca, tmp_path):
    r = run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "o", "--days", "30",
            check=True)
    end = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30))
    assert f"valid until {end:%Y-%m-%d}" in r.stdout or \
        f"valid until {end - datetime.timedelta(minutes=10):%Y-%m-%d}" in r.stdout, r.stdout


def test_revoke_lists_serials_and_writes_the_crl(tmp_path):
    ca, pub = tmp_path / "ca", tmp_path / "pub"
    pub.mkdir()
    r = run("ca", "init", "--dir", ca, "--trust-domain", "ops.test", "--crl-out",
            pub / "crl.pem", check=True)
    assert f"CRL published to {pub / 'crl.pem'}" in r.stdout
    run("ca", "register", "--dir", ca, "web", check=True)
    out = tmp_path / "o"
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    first = serial_of(out / "web.crt")
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)  # supersedes: 2 valid
    second = serial_of(out / "web.crt")
    r = run("ca", "revoke", "--dir", ca, "web", "--reason", "keyCompromise", check=True)
    assert f"revoked {first} web" in r.stdout and f"revoked {second} web" in r.stdout
    assert f"CRL written to {pub / 'crl.pem'}" in r.stdout
    text = openssl("crl", "-in", pub / "crl.pem", "-noout", "-text").stdout.upper()
    assert first.upper() in text and second.upper() in text
    v = openssl("verify", "-crl_check_all", "-CAfile", ca / "ca.crt", "-CRLfile",
                pub / "crl.pem", "-untrusted", out / "web.crt", out / "web.crt")
    assert v.returncode != 0 and "revoked" in (v.stdout + v.stderr)


def test_crl_out_is_remembered(ca, tmp_path):
    out = tmp_path / "o"
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    r = run("ca", "revoke", "--dir", ca, "web", check=True)
    assert "publish a new CRL" in r.stdout  # no place known yet
    work = tmp_path / "work"
    work.mkdir()
    ok("ca", "crl", "--dir", ca, "--out", "crl.pem", cwd=work)
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    s = serial_of(out / "web.crt")
    before = (work / "crl.pem").read_bytes()
    r = run("ca", "revoke", "--dir", ca, "--serial", s, check=True)
    assert f"CRL written to {work / 'crl.pem'}" in r.stdout
    assert (work / "crl.pem").read_bytes() != before
    assert s.upper() in openssl("crl", "-in", work / "crl.pem", "-noout", "-text").stdout.upper()
    r = run("ca", "crl", "--dir", ca, check=True)  # no --out: the remembered place
    assert str(work / "crl.pem") in r.stdout


def test_services_and_unregister(ca, tmp_path):
    out = tmp_path / "o"
    r = run("ca", "services", "--dir", ca, check=True)
    lines = r.stdout.splitlines()
    assert lines[1].split()[:2] == ["api", "spiffe://ops.test/svc/api"]
    assert "DNS:localhost,IP:127.0.0.1" in lines[1]
    j = json.loads(run("ca", "services", "--dir", ca, "--json", check=True).stdout)
    assert [s["service"] for s in j] == ["api", "web"] and j[0]["ip"] == ["127.0.0.1"]
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    s = serial_of(out / "web.crt")
    before = snapshot(tmp_path)
    r = run("ca", "unregister", "--dir", ca, "web")
    assert r.returncode == 1 and s in r.stderr and "--revoke" in r.stderr
    assert snapshot(tmp_path) == before
    assert "web" in run("ca", "services", "--dir", ca, check=True).stdout
    r = run("ca", "unregister", "--dir", ca, "web", "--revoke", check=True)
    assert f"revoked {s} web" in r.stdout
    assert "web" not in run("ca", "services", "--dir", ca, check=True).stdout
    r = run("ca", "issue", "--dir", ca, "web", "--out", out)
    assert r.returncode == 1 and "not registered" in r.stderr
    # its revoked certificate stays in the inventory and in the CRL
    assert "revoked cessationOfOperation" in run("ca", "list", "--dir", ca, check=True).stdout
    run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
    assert s.upper() in openssl("crl", "-in", tmp_path / "crl.pem", "-noout",
                                "-text").stdout.upper()
    # unregistering a service without valid certificates needs no --revoke; re-register works
    run("ca", "unregister", "--dir", ca, "api", check=True)
    r = run("ca", "register", "--dir", ca, "api", check=True)
    assert r.stdout.startswith("registered service api")


def test_list_filters_sorted_with_spiffe_id(ca, tmp_path):
    out = tmp_path / "o"
    run("ca", "issue", "--dir", ca, "web", "--out", out, "--days", "5", check=True)
    run("ca", "issue", "--dir", ca, "api", "--out", out, "--days", "300", check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", out, "--days", "20", check=True)
    rows = [line.split() for line in run("ca", "list", "--dir", ca, check=True)
            .stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["api", "web", "web"]  # by service, then expiry
    assert rows[0][2] == "spiffe://ops.test/svc/api" and rows[1][-1] == "superseded"
    r = run("ca", "list", "--dir", ca, "--service", "web", "--status", "active",
            "--expiring-within", "30", check=True)
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert len(rows) == 1 and rows[0][0] == "web" and rows[0][-1] == "active"
    assert rows[0][3].startswith(
        f"{datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=20):%Y-%m}")
    j = json.loads(run("ca", "list", "--dir", ca, "--expiring-within", "10", "--json",
                       check=True).stdout)
    assert [(x["service"], x["status"], x["spiffe_id"]) for x in j] == \
        [("web", "superseded", "spiffe://ops.test/svc/web")]
    r = run("ca", "list", "--dir", ca, "--status", "revoked", check=True)
    assert "no certificate matches" in r.stdout


# ---- 2. the offline root's duties --------------------------------------------------------


def offline_root(ca, tmp_path):
    """Move root.key offline as the docs say; return where it went."""
    vault = tmp_path / "vault"
    vault.mkdir()
    shutil.move(ca / "root.key", vault / "root.key")
    return vault / "root.key"


def verify(ca, crl, chain):
    return openssl("verify", "-crl_check_all", "-CAfile", ca / "ca.crt", "-CRLfile", crl,
                   "-untrusted", chain, chain)


def handshake(port, cadir, certdir, who):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(cadir / "ca.crt"))
    ctx.load_cert_chain(str(certdir / f"{who}.crt"), str(certdir / f"{who}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"ping")
            got = b""
            while len(got) < 4:
                chunk = s.recv(16)
                if not chunk:
                    break
                got += chunk
            return got


def test_renew_intermediate_same_key(ca, tmp_path):
    out = tmp_path / "o"
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)
    key = offline_root(ca, tmp_path)
    old_inter = (ca / "intermediate.crt").read_text()
    r = run("ca", "renew-intermediate", "--dir", ca, "--root-key", key, check=True)
    assert "same key" in r.stdout and "rotate --dir" in r.stderr
    assert (ca / "intermediate.crt").read_text() != old_inter
    # the old leaf verifies against the renewed intermediate (same name, same key)
    leaf = tmp_path / "leaf.pem"
    leaf.write_text((out / "web.crt").read_text().split("-----END CERTIFICATE-----")[0] +
                    "-----END CERTIFICATE-----\n")
    v = openssl("verify", "-CAfile", ca / "ca.crt", "-untrusted", ca / "intermediate.crt", leaf)
    assert v.returncode == 0, v.stderr
    run("ca", "issue", "--dir", ca, "web", "--out", out, check=True)  # signs with it


def test_renew_intermediate_refuses_the_wrong_root_key(ca, tmp_path):
    other = tmp_path / "other"
    run("ca", "init", "--dir", other, "--trust-domain", "other.test", check=True)
    before = snapshot(ca)
    r = run("ca", "renew-intermediate", "--dir", ca, "--root-key", other / "root.key")
    assert r.returncode == 1 and "is not the key of" in r.stderr
    r = run("ca", "root-crl", "--dir", ca, "--root-key", other / "root.key")
    assert r.returncode == 1 and "is not the key of" in r.stderr
    assert snapshot(ca) == before


def test_renew_intermediate_new_key_overlap_both_chains_verify(ca, tmp_path):
    """A new intermediate key: clients issued under the old intermediate keep working
    through `meshtls proxy server --crl` (openssl verify agrees), new ones work, and
    revocation still works for both."""
    pub = tmp_path / "crl.pem"
    old, new = tmp_path / "old", tmp_path / "new"
    run("ca", "register", "--dir", ca, "old", check=True)
    run("ca", "register", "--dir", ca, "fresh", check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", old, check=True)
    run("ca", "issue", "--dir", ca, "old", "--out", old, check=True)
    run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    key = offline_root(ca, tmp_path)
    old_serial = serial_of(ca / "intermediate.crt")
    r = run("ca", "renew-intermediate", "--dir", ca, "--root-key", key, "--new-key", check=True)
    assert "new key" in r.stdout
    assert (ca / f"intermediate-{old_serial}.crt").exists()
    assert oct((ca / f"intermediate-{old_serial}.key").stat().st_mode & 0o777) == "0o600"
    assert "G2" in json.loads(run("cert", "inspect", "--json", ca / "intermediate.crt",
                                  check=True).stdout)[0]["subject"]
    # the server side moves to the new intermediate; a new client is issued under it
    run("ca", "issue", "--dir", ca, "api", "--out", new, check=True)
    run("ca", "issue", "--dir", ca, "fresh", "--out", new, check=True)
    # the CRL (rewritten by renew-intermediate at the remembered place) has one CRL per
    # intermediate and the root's
    assert pub.read_text().count("BEGIN X509 CRL") == 3
    for chain in (old / "web.crt", new / "fresh.crt", new / "api.crt"):
        v = verify(ca, pub, chain)
        assert v.returncode == 0, (chain, v.stdout, v.stderr)
    # revocation of a client under the old intermediate still reaches the proxy
    run("ca", "revoke", "--dir", ca, "old", check=True)
    v = verify(ca, pub, old / "old.crt")
    assert v.returncode != 0 and "revoked" in v.stdout + v.stderr
    echo = EchoServer()
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", new / "api.crt",
              "--key", new / "api.key", "--cacert", ca / "ca.crt", "--crl", pub, "--allow-all")
    try:
        assert handshake(p.port, ca, old, "web") == b"ping"  # old intermediate: overlap
        assert handshake(p.port, ca, new, "fresh") == b"ping"  # new intermediate
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            handshake(p.port, ca, old, "old")
        wait_for(lambda: "revoked" in p.log(), what="the refusal logged")
    finally:
        p.stop()
        echo.close()
    # rotate --force moves every service to the new intermediate
    run("ca", "rotate", "--dir", ca, "--force", check=True)
    chain = (old / "web.crt").read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    assert verify(ca, pub, old / "web.crt").returncode == 0
    inter = json.loads(run("cert", "inspect", "--json", old / "web.crt", check=True).stdout)[1]
    assert "G2" in inter["subject"]


def test_root_crl_ceremony(ca, tmp_path):
    pub = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    key = offline_root(ca, tmp_path)
    run("ca", "renew-intermediate", "--dir", ca, "--root-key", key, "--new-key", check=True)
    retired = [p.name for p in ca.glob("intermediate-*.crt")][0][len("intermediate-"):-4]
    cur = serial_of(ca / "intermediate.crt")
    r = run("ca", "root-crl", "--dir", ca, "--root-key", key, "--revoke-intermediate", cur)
    assert r.returncode == 1 and "current intermediate" in r.stderr
    r = run("ca", "root-crl", "--dir", ca, "--root-key", key, "--days", "400",
            "--revoke-intermediate", retired, "--reason", "caCompromise", check=True)
    assert "valid 400 days" in r.stdout
    text = openssl("crl", "-in", ca / "root.crl", "-noout", "-text").stdout
    assert "CA Compromise" in text
    assert retired.upper() in text.upper().replace(":", "")
    assert "X509v3 CRL Number" in text
    # the published bundle carries the new root CRL
    assert (ca / "root.crl").read_text() in pub.read_text()
    r = run("cert", "check", pub, "--min-days", "1")
    assert r.returncode == 0 and r.stdout.count("OK:") == pub.read_text().count("BEGIN X509 CRL")


def signed_crl(ca, hours_left, issuer="root"):
    """A CRL of `issuer` (root or intermediate) with nextUpdate `hours_left` from now
    (negative: in the past), in PEM: as the clock would have it a year after `ca init`
    (root) or a week after the last `ca crl` (intermediate) - the clock moved, not the
    code."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    cert = x509.load_pem_x509_certificate((ca / f"{issuer}.crt").read_bytes())
    key = serialization.load_pem_private_key((ca / f"{issuer}.key").read_bytes(), None)
    now = datetime.datetime.utcnow()
    crl = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
           .last_update(now - datetime.timedelta(days=365 if issuer == "root" else 7))
           .next_update(now + datetime.timedelta(hours=hours_left))
           .add_extension(x509.CRLNumber(99), False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                          False)
           .sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM)


def stale_root_crl(ca, hours_left):
    (ca / "root.crl").write_bytes(signed_crl(ca, hours_left, "root"))


def test_crl_near_and_past_next_update_warned(ca, tmp_path):
    pytest.importorskip("cryptography")
    pub = tmp_path / "crl.pem"
    stale_root_crl(ca, 24 * 10)
    r = run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    assert "goes stale on" in r.stderr and "ca root-crl" in r.stderr
    r = run("ca", "rotate", "--dir", ca, check=True)  # cron sees it too
    assert "goes stale on" in r.stderr
    r = run("cert", "check", pub, "--min-days", "14")
    assert r.returncode == 1 and "EXPIRING" in r.stdout and "Root CA" in r.stdout
    stale_root_crl(ca, -1)
    r = run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    assert "went stale on" in r.stderr
    r = run("cert", "check", pub, "--min-days", "1")
    assert r.returncode == 1 and "STALE" in r.stdout and "Root CA" in r.stdout


@pytest.mark.parametrize("which", ["root", "intermediate"])
def test_stale_crl_does_not_lock_everyone_out(ca, tmp_path, which):
    """When a CRL in the --crl file passes nextUpdate (the root's a year after `ca init` with
    no ceremony; the intermediate's a week after the last `ca crl`), OpenSSL's default would
    refuse EVERY client and tell it its *certificate* expired.  meshtls keeps enforcing the
    stale CRL (docs/PKI.md "When a CRL goes stale"): a client it does not list is let in, the
    staleness is warned about and exported; then a fresh CRL clears the warning."""
    pytest.importorskip("cryptography")
    pub, certs = tmp_path / "crl.pem", tmp_path / "certs"
    run("ca", "issue", "--dir", ca, "api", "--out", certs, check=True)
    run("ca", "issue", "--dir", ca, "web", "--out", certs, check=True)
    if which == "root":
        stale_root_crl(ca, -1)
        run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    else:
        pub.write_bytes(signed_crl(ca, -1, "intermediate") + (ca / "root.crl").read_bytes())
    r = run("cert", "check", pub, "--min-days", "1")
    assert r.returncode == 1 and "STALE" in r.stdout
    echo = EchoServer()
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", certs / "api.crt",
              "--key", certs / "api.key", "--cacert", ca / "ca.crt", "--crl", pub, "--allow-all")
    try:
        assert handshake(p.port, ca, certs, "web") == b"ping"
        wait_for(lambda: "passed its nextUpdate" in p.log(), what="the staleness warned")
        assert p.metrics()["meshtls_crl_stale"] >= 1
    finally:
        p.stop()
        echo.close()
    # the fix: a fresh CRL (for the root's, the ceremony), and the same client is let in
    if which == "root":
        key = offline_root(ca, tmp_path)
        run("ca", "root-crl", "--dir", ca, "--root-key", key, check=True)
    else:
        run("ca", "crl", "--dir", ca, "--out", pub, check=True)
    assert run("cert", "check", pub, "--min-days", "1").returncode == 0
    echo = EchoServer()
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", certs / "api.crt",
              "--key", certs / "api.key", "--cacert", ca / "ca.crt", "--crl", pub, "--allow-all")
    try:
        assert handshake(p.port, ca, certs, "web") == b"ping"
    finally:
        p.stop()
        echo.close()


def test_new_subcommands_have_help():
    for sub in ("services", "unregister", "renew-intermediate", "root-crl"):
        r = run("ca", sub, "--help")
        assert r.returncode == 0 and sub in r.stdout, sub
    assert "STALE" in run("cert", "--help").stdout


def test_intermediate_near_its_end_is_warned(ca, tmp_path):
    # docs/PKI.md: `ca crl` and `ca rotate` warn from 90 days before the intermediate's end,
    # naming the ceremony; a renewal for 60 days puts it inside that window, 400 days outside
    key = offline_root(ca, tmp_path)
    run("ca", "renew-intermediate", "--dir", ca, "--root-key", key, "--days", "400", check=True)
    for sub in (["crl", "--out", tmp_path / "crl.pem"], ["rotate"]):
        r = run("ca", *sub[:1], "--dir", ca, *sub[1:], check=True)
        assert "intermediate CA" not in r.stderr, r.stderr
    run("ca", "renew-intermediate", "--dir", ca, "--root-key", key, "--days", "60", check=True)
    for sub in (["crl", "--out", tmp_path / "crl.pem"], ["rotate"]):
        r = run("ca", *sub[:1], "--dir", ca, *sub[1:], check=True)
        assert "intermediate CA" in r.stderr and "expires on" in r.stderr, r.stderr
        assert "renew-intermediate --dir" in r.stderr
