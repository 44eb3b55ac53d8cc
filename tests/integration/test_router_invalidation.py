"""The router's cache invalidation (issue 11 section 6, docs/ROUTER.md "Invalidation"): a
removed grant, a user moved out of a team, or a revoked certificate refuses new connects
within a second and cuts that user's live relays within two, on SQLite and on a real
PostgreSQL, with changes made by `meshtls router` commands or by plain SQL; two routers on
one PostgreSQL behave as one.

Every router here runs with --cache-ttl 60s and --recheck-interval 0: without the
invalidation a cached "OK" would answer for a minute and a live relay would never be
checked again, so each bound below is met by the invalidation alone."""
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest

from conftest import run
from proxy_util import EchoServer
from servers import PasswordPostgres, _as_pg, pg_skip_reason
from test_router import (REVOKED, SSH_ROUTER_DDL, TD, Router, ask, pki,  # noqa: F401 (fixture)
                         read_line, tls_conn)

NO_POLL = ("--cache-ttl", "60s", "--recheck-interval", "0")
needs_pg = pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason()))


@pytest.fixture(scope="module")
def echo():
    e = EchoServer()
    yield e
    e.close()


def relay(pki, port, who, cid, certs="certs"):
    """A live relay: `who` connected to `cid`, OK read and one echo round trip done."""
    s = tls_conn(pki, port, who, certs)
    s.sendall(cid.encode() + b"\nping")
    assert read_line(s) == b"OK\n"
    got = b""
    while len(got) < 4:
        b = s.recv(4 - len(got))
        assert b, "the relay closed before the echo"
        got += b
    assert got == b"ping"
    return s


def cut_within(s, seconds):
    """Wait (bounded) until the router closes the relay `s`; the time it took."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - t0 < seconds + 3:  # read on past the bound to say how late
        try:
            if not s.recv(4096):
                break
        except socket.timeout:
            try:
                s.sendall(b"x")  # keep the relay busy: a cut is not an idle timeout
            except (ssl.SSLError, OSError):
                break
        except (ssl.SSLError, OSError):
            break
    took = time.monotonic() - t0
    s.close()
    return took


def refused_within(pki, router, who, cid, seconds, certs="certs"):
    """Ask until the answer is no longer OK (bounded); (answer, seconds it took)."""
    t0 = time.monotonic()
    while True:
        try:
            got = ask(pki, router.port, who, cid.encode() + b"\n", certs)
        except (ssl.SSLError, OSError) as e:  # no answer at all: reported as the failure
            got = repr(e).encode()
        if got != b"OK\n" or time.monotonic() - t0 > seconds + 3:
            return got, time.monotonic() - t0
        time.sleep(0.05)


def metric(router, name):
    status, body = router.get("/metrics")
    assert status == 200
    m = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def seed(store, echo_port):
    """web: alice directly, team ops (bob) through the team."""
    def r(*a):
        run("router", "--store", store, *a, check=True)
    r("hosts", "add", "web", "--org", "acme", "--addr", f"127.0.0.1:{echo_port}")
    r("teams", "add", "ops", "--org", "acme")
    r("members", "add", "ops", "bob")
    r("grant", "web", "--user", "alice")
    r("grant", "web", "--team", "ops")


def check_grant_and_team(pki, router, sql, arr):
    """Plain SQL (sql(statement)) removes alice's grant and moves bob out of ops: new
    connects refused within 1 s, live relays cut within 2 s, each with an audit line."""
    a, b = relay(pki, router.port, "alice", "web"), relay(pki, router.port, "bob", "web")
    assert ask(pki, router.port, "alice", b"web\n") == b"OK\n"  # cached from here on
    assert ask(pki, router.port, "bob", b"web\n") == b"OK\n"
    sql(f"UPDATE backend_hosts SET user_ids = {arr([])} WHERE connect_id = 'web'")
    t_change = time.monotonic()
    got, took = refused_within(pki, router, "alice", "web", 1.0)
    assert got.startswith(b"ERROR: forbidden") and took < 1.0, (got, took, router.log()[-3000:])
    cut_within(a, 2.0)
    assert time.monotonic() - t_change < 2.0, router.log()[-3000:]
    # bob still relays: his grant is through the team, untouched
    b.sendall(b"still")
    assert b.recv(5) == b"still"
    sql(f"UPDATE teams SET user_ids = {arr([])} WHERE team_id = 'ops'")
    t_change = time.monotonic()
    got, took = refused_within(pki, router, "bob", "web", 1.0)
    assert got.startswith(b"ERROR: forbidden") and took < 1.0, (got, took)
    cut_within(b, 2.0)
    assert time.monotonic() - t_change < 2.0, router.log()[-3000:]
    log = router.log()
    assert log.count("the grant was removed: relay closed") >= 2, log[-3000:]
    assert metric(router, 'meshtls_router_relays_cut_total{reason="grant"}') >= 2


def sqlite_arr(v):
    return "'[" + ",".join(f'"{x}"' for x in v) + "]'"


def pg_arr(v):
    return "ARRAY[" + ",".join(f"'{x}'" for x in v) + "]::text[]" if v else "'{}'::text[]"


def test_sqlite_plain_sql_grant_and_team(pki, echo, tmp_path):
    db = tmp_path / "inv.db"
    store = f"sqlite:{db}"
    seed(store, echo.port)
    router = Router(pki, "--store", store, *NO_POLL)

    def sql(q):
        con = sqlite3.connect(db, timeout=5)
        con.execute(q)
        con.commit()
        con.close()
    try:
        # the connection log writes the file too: that alone must not flush the cache
        for _ in range(3):
            assert ask(pki, router.port, "alice", b"web\n") == b"OK\n"
        time.sleep(0.5)
        assert metric(router, "meshtls_router_cache_invalidations_total") == 0
        check_grant_and_team(pki, router, sql, sqlite_arr)
        assert metric(router, "meshtls_router_cache_invalidations_total") >= 2
    finally:
        router.stop()


def test_sqlite_command_cuts_a_live_relay(pki, echo, tmp_path):
    store = f"sqlite:{tmp_path / 'cmd.db'}"
    seed(store, echo.port)
    router = Router(pki, "--store", store, *NO_POLL)
    try:
        live = relay(pki, router.port, "alice", "web")
        run("router", "--store", store, "revoke", "web", "--user", "alice", check=True)
        t_change = time.monotonic()
        got, took = refused_within(pki, router, "alice", "web", 1.0)
        assert got.startswith(b"ERROR: forbidden") and took < 1.0, (got, took)
        cut_within(live, 2.0)
        assert time.monotonic() - t_change < 2.0, router.log()[-3000:]
    finally:
        router.stop()


def test_revoked_certificate_cuts_the_live_relay(pki, echo, tmp_path):
    """A new CRL file (no signal): new connects refused with `ERROR: revoked` within 1 s,
    the live relay cut within 2 s."""
    ca = pki / "ca"
    run("ca", "register", "--dir", ca, "dave", "--spiffe-id",
        f"spiffe://{TD}/orgs/acme/users/dave", check=True)
    run("ca", "issue", "--dir", ca, "dave", "--out", pki / "dave-certs", check=True)
    crl = tmp_path / "crl.pem"
    run("ca", "crl", "--dir", ca, "--out", crl, check=True)
    store = f"sqlite:{tmp_path / 'rev.db'}"
    seed(store, echo.port)
    run("router", "--store", store, "grant", "web", "--user", "dave", check=True)
    router = Router(pki, "--store", store, "--crl", crl, *NO_POLL)
    try:
        live = relay(pki, router.port, "dave", "web", certs="dave-certs")
        other = relay(pki, router.port, "alice", "web")
        run("ca", "revoke", "--dir", ca, "dave", check=True)
        run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.new", check=True)
        os.replace(tmp_path / "crl.new", crl)  # as a deployment publishes it: whole
        t_change = time.monotonic()
        got, _ = refused_within(pki, router, "dave", "web", 1.0, certs="dave-certs")
        assert got == REVOKED, got
        assert time.monotonic() - t_change < 1.0, router.log()[-3000:]
        cut_within(live, 2.0)
        assert time.monotonic() - t_change < 2.0, router.log()[-3000:]
        other.sendall(b"still")  # someone else's relay goes on
        assert other.recv(5) == b"still"
        other.close()
        log = router.log()
        assert "the certificate was revoked: relay closed" in log, log[-3000:]
        assert "the CRL file changed" in log
        assert metric(router, 'meshtls_router_relays_cut_total{reason="revoked"}') == 1
    finally:
        router.stop()


@pytest.fixture(scope="module")
def pg():
    server = PasswordPostgres()
    yield server
    server.stop()


def pg_sql(pg, q):
    r = subprocess.run(["psql", pg.url(), "-v", "ON_ERROR_STOP=1", "-Atc", q],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pg_super(pg, q):
    """Run SQL in the test database as the superuser (over the local socket)."""
    r = _as_pg(["psql", "-h", str(pg.base), "-p", str(pg.port), "-U", "postgres", "-d",
                pg.dbname, "-v", "ON_ERROR_STOP=1", "-c", q])
    assert r.returncode == 0, r.stderr


def pg_reset(pg):
    pg_super(pg, "DROP TABLE IF EXISTS backend_hosts, teams, users, router_changes, "
                 "router_connections, router_schema_migrations CASCADE; "
                 "DROP FUNCTION IF EXISTS meshtls_router_changed() CASCADE")


@needs_pg
def test_postgres_plain_sql_grant_and_team(pki, echo, pg):
    pg_reset(pg)
    router = Router(pki, "--store", pg.url(), *NO_POLL)
    try:
        seed(pg.url(), echo.port)
        triggers = pg_sql(pg, "SELECT count(*) FROM pg_trigger WHERE tgname = "
                              "'meshtls_router_changed'")
        assert triggers.strip() == "4"  # backend_hosts, teams, users, router_changes
        check_grant_and_team(pki, router, lambda q: pg_sql(pg, q), pg_arr)
        assert "without the router's change trigger" not in router.log()
    finally:
        router.stop()


def refused_and_cut_on_all(pki, routers, who, lives):
    """Right after a change: `who` is refused by every router within 1 s, and each of the
    live relays `lives` is cut within 2 s."""
    t_change = time.monotonic()
    for r in routers:
        got, _ = refused_within(pki, r, who, "web", 1.0)
        assert got.startswith(b"ERROR: forbidden"), got
    assert time.monotonic() - t_change < 1.0
    for s in lives:
        cut_within(s, 2.0)
    assert time.monotonic() - t_change < 2.0, "".join(r.log()[-2000:] for r in routers)


@needs_pg
def test_two_routers_on_one_postgres(pki, echo, pg):
    pg_reset(pg)
    r1 = Router(pki, "--store", pg.url(), *NO_POLL)
    r2 = Router(pki, "--store", pg.url(), *NO_POLL)
    try:
        seed(pg.url(), echo.port)
        lives = [relay(pki, r.port, "alice", "web") for r in (r1, r2)]
        for r in (r1, r2):
            assert ask(pki, r.port, "alice", b"web\n") == b"OK\n"
        # through one router's `meshtls router` command
        run("router", "--store", pg.url(), "revoke", "web", "--user", "alice", check=True)
        refused_and_cut_on_all(pki, (r1, r2), "alice", lives)
        # and through plain SQL: bob's team is emptied while he relays on both
        lives = [relay(pki, r.port, "bob", "web") for r in (r1, r2)]
        pg_sql(pg, "UPDATE teams SET user_ids = '{}' WHERE team_id = 'ops'")
        refused_and_cut_on_all(pki, (r1, r2), "bob", lives)
        for r in (r1, r2):
            assert "the grant was removed: relay closed" in r.log()
    finally:
        r1.stop()
        r2.stop()


@needs_pg
def test_postgres_tables_of_another_owner(pki, echo, pg):
    """An ssh-router database whose tables the router's role does not own: the migration
    skips their triggers (no failure), the router says so, and `meshtls router` commands
    still invalidate (they notify themselves)."""
    pg_reset(pg)
    ddl = (SSH_ROUTER_DDL +
           f"GRANT SELECT, INSERT, UPDATE, DELETE ON backend_hosts, teams, users TO {pg.user}")
    pg_super(pg, ddl)
    router = Router(pki, "--store", pg.url(), *NO_POLL)
    try:
        assert "tables without the router's change trigger: backend_hosts, teams, users" in (
            router.log()), router.log()[-3000:]
        seed(pg.url(), echo.port)
        live = relay(pki, router.port, "alice", "web")
        run("router", "--store", pg.url(), "revoke", "web", "--user", "alice", check=True)
        t_change = time.monotonic()
        got, took = refused_within(pki, router, "alice", "web", 1.0)
        assert got.startswith(b"ERROR: forbidden") and took < 1.0, (got, took)
        cut_within(live, 2.0)
        assert time.monotonic() - t_change < 2.0
    finally:
        router.stop()
        pg_reset(pg)
