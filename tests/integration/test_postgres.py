"""A real PostgreSQL with certificate authentication (hostssl ... cert,
clientcert=verify-full) accepts psql with a certificate from `meshtls ca
issue`, refuses it after `meshtls ca revoke` once it loads the CRL from
`meshtls ca crl`, and refuses a certificate from another CA."""
import shutil
import time

import pytest

from conftest import run
from servers import Postgres, psql

pytestmark = pytest.mark.skipif(not shutil.which("psql"), reason="PostgreSQL not installed")


@pytest.fixture
def pki(tmp_path):
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "db.test", check=True)
    run("ca", "register", "--dir", ca, "postgres", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "register", "--dir", ca, "app", check=True)
    run("ca", "issue", "--dir", ca, "postgres", "--out", tmp_path / "srv", check=True)
    run("ca", "issue", "--dir", ca, "app", "--out", tmp_path / "cli", check=True)
    run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
    return tmp_path


def test_psql_cert_auth_then_revocation(pki):
    srv, cli = pki / "srv", pki / "cli"
    pg = Postgres(srv / "postgres.crt", srv / "postgres.key", srv / "ca.crt", pki / "crl.pem")
    try:
        assert pg.sql("CREATE ROLE app LOGIN").returncode == 0  # cert CN -> role
        r = psql(pg.port, "app", cli / "app.crt", cli / "app.key", cli / "ca.crt")
        assert r.returncode == 0, r.stderr + pg.log()
        assert r.stdout.strip() == "hello from postgres"
        # the CN must match the role: the same certificate cannot log in as postgres
        r = psql(pg.port, "postgres", cli / "app.crt", cli / "app.key", cli / "ca.crt")
        assert r.returncode != 0 and "certificate authentication failed" in r.stderr
        # revoke, publish the CRL, reload the server: refused
        run("ca", "revoke", "--dir", pki / "ca", "app", "--reason", "keyCompromise", check=True)
        run("ca", "crl", "--dir", pki / "ca", "--out", pki / "crl.pem", check=True)
        pg.reload_crl(pki / "crl.pem")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = psql(pg.port, "app", cli / "app.crt", cli / "app.key", cli / "ca.crt")
            if r.returncode != 0:
                break
            time.sleep(0.2)
        assert r.returncode != 0
        assert "revoked" in r.stderr + pg.log()
    finally:
        pg.stop()


def test_psql_with_certificate_of_another_ca(pki, tmp_path):
    other = tmp_path / "other"
    run("ca", "init", "--dir", other, "--trust-domain", "evil.test", check=True)
    run("ca", "register", "--dir", other, "app", check=True)
    run("ca", "issue", "--dir", other, "app", "--out", tmp_path / "evil", check=True)
    srv = pki / "srv"
    pg = Postgres(srv / "postgres.crt", srv / "postgres.key", srv / "ca.crt", pki / "crl.pem")
    try:
        pg.sql("CREATE ROLE app LOGIN")
        e = tmp_path / "evil"
        r = psql(pg.port, "app", e / "app.crt", e / "app.key", srv / "ca.crt")
        assert r.returncode != 0
        assert "unknown ca" in r.stderr or "certificate verify failed" in r.stderr, r.stderr
    finally:
        pg.stop()
