"""A real PostgreSQL with certificate authentication (hostssl ... cert,
clientcert=verify-full) accepts psql with a certificate from `meshtls ca
issue`, refuses it after `meshtls ca revoke` once it loads the CRL from
`meshtls ca crl`, and refuses a certificate from another CA and a client
without one."""
import time

import pytest

from conftest import run
from servers import Postgres, pg_skip_reason, psql, wait_log

pytestmark = pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason()))


@pytest.fixture
def pki(tmp_path):
    """CA db.test: the server `postgres` (DNS localhost, IP 127.0.0.1) and two
    clients, `app` and `reports`; an empty CRL."""
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "db.test", check=True)
    run("ca", "register", "--dir", ca, "postgres", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    for svc in ("app", "reports"):
        run("ca", "register", "--dir", ca, svc, check=True)
        run("ca", "issue", "--dir", ca, svc, "--out", tmp_path / "cli", check=True)
    run("ca", "issue", "--dir", ca, "postgres", "--out", tmp_path / "srv", check=True)
    run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
    return tmp_path


@pytest.fixture
def pg(pki):
    srv = pki / "srv"
    server = Postgres(srv / "postgres.crt", srv / "postgres.key", srv / "ca.crt",
                      pki / "crl.pem")
    try:
        for role in ("app", "reports"):  # cert auth maps the certificate's CN to the role
            r = server.sql(f"CREATE ROLE {role} LOGIN")
            assert r.returncode == 0, r.stderr
        yield server
    finally:
        server.stop()


def _psql(pg, pki, user, who="cli", name=None):
    c = pki / who
    name = name or user
    return psql(pg.port, user, c / f"{name}.crt", c / f"{name}.key", pki / "srv" / "ca.crt")


def test_psql_cert_auth_then_revocation(pki, pg):
    r = _psql(pg, pki, "app")
    assert r.returncode == 0, r.stderr + pg.log()
    assert r.stdout.strip() == "hello from postgres"
    # the CN must match the role: the same certificate cannot log in as postgres
    r = _psql(pg, pki, "postgres", name="app")
    assert r.returncode != 0 and "certificate authentication failed" in r.stderr, r.stderr

    # revoke, publish the CRL, reload the server: refused during the handshake
    run("ca", "revoke", "--dir", pki / "ca", "app", "--reason", "keyCompromise", check=True)
    run("ca", "crl", "--dir", pki / "ca", "--out", pki / "crl.pem", check=True)
    pg.reload_crl(pki / "crl.pem")
    deadline = time.monotonic() + 20  # the reload is asynchronous; bounded retries
    while time.monotonic() < deadline:
        r = _psql(pg, pki, "app")
        if r.returncode != 0:
            break
        time.sleep(0.2)
    assert r.returncode != 0, "still accepted 20 s after the CRL reload"
    assert "certificate revoked" in r.stderr, r.stderr
    assert wait_log(pg.log, "could not accept SSL connection: certificate verify failed")
    # only that certificate: another client of the same CA still gets in
    r = _psql(pg, pki, "reports")
    assert r.returncode == 0, r.stderr + pg.log()


def test_psql_with_certificate_of_another_ca(pki, pg):
    other = pki / "other"
    run("ca", "init", "--dir", other, "--trust-domain", "evil.test", check=True)
    run("ca", "register", "--dir", other, "app", check=True)
    run("ca", "issue", "--dir", other, "app", "--out", pki / "evil", check=True)
    r = _psql(pg, pki, "app", who="evil")
    assert r.returncode != 0
    assert "unknown ca" in r.stderr, r.stderr
    assert wait_log(pg.log, "certificate verify failed")


def test_psql_without_client_certificate(pki, pg):
    # libpq sends no certificate when the sslcert file does not exist
    r = psql(pg.port, "app", pki / "none.crt", pki / "none.key", pki / "srv" / "ca.crt")
    assert r.returncode != 0
    assert "hello" not in r.stdout
    assert "connection requires a valid client certificate" in r.stderr, r.stderr
