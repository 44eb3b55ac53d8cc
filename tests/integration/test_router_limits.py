"""Limits shared by several routers on one database (issue 11 section 6, docs/ROUTER.md
"Limits"): per-user and per-organisation concurrent sessions and attempts per minute hold for
two routers together, on SQLite (two routers on one file) and on a real PostgreSQL; a router
killed with SIGKILL stops counting after the bound; a router stopped cleanly takes its rows
with it.

Each router publishes its counts and reads the other's on its watcher's tick (250 ms). The
tests never sleep for it: `synced` polls each router's meshtls_router_limit_syncs_total until
both have done two full rounds after the last action, twice over (one router's publish, then
the other's read)."""
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import run
from servers import PasswordPostgres, pg_skip_reason
from test_router import Router, ask, echo, pki, read_line, tls_conn  # noqa: F401 (fixtures)
from test_router_invalidation import metric, pg_super, relay

TOO_MANY = b"ERROR: too-many-sessions too many open sessions; close one first\n"
RATE = b"ERROR: rate-limited too many connection attempts; try again later\n"
SYNCS = "meshtls_router_limit_syncs_total"


@pytest.fixture(scope="module")
def pg():
    if pg_skip_reason() is not None:
        pytest.skip(str(pg_skip_reason()))
    server = PasswordPostgres()
    yield server
    server.stop()


class Store:
    """A database the routers share: .url, .sql(query) -> rows, .reset()."""

    def __init__(self, kind, tmp_path, pg=None):
        self.kind, self.pg = kind, pg
        if kind == "sqlite":
            self.path = tmp_path / "limits.db"
            self.url = f"sqlite:{self.path}"
        else:
            self.url = pg.url()
            pg_super(pg, "DROP TABLE IF EXISTS backend_hosts, teams, users, router_changes, "
                          "router_connections, router_schema_migrations, "
                          "router_limit_instances, router_limit_counts CASCADE; "
                          "DROP FUNCTION IF EXISTS meshtls_router_changed() CASCADE")

    def sql(self, q):
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path, timeout=5)
            try:
                return con.execute(q).fetchall()
            finally:
                con.close()
        r = subprocess.run(["psql", self.pg.url(), "-v", "ON_ERROR_STOP=1", "-Atc", q],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [tuple(line.split("|")) for line in r.stdout.splitlines()]


def seeded(kind, tmp_path, echo, pg=None):
    """A store with host h of acme, granted to alice and bob."""
    s = Store(kind, tmp_path, pg)
    for a in (("hosts", "add", "h", "--org", "acme", "--addr", f"127.0.0.1:{echo.port}"),
              ("grant", "h", "--user", "alice"), ("grant", "h", "--user", "bob")):
        run("router", "--store", s.url, *a, check=True)
    return s


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, echo):
    pg = request.getfixturevalue("pg") if request.param == "postgres" else None
    return seeded(request.param, tmp_path, echo, pg)


def routers(pki, store, *limits):
    """Two routers on `store` with only the limits given (the others off), then any other
    flags given after "--"."""
    extra = ()
    if "--" in limits:
        i = limits.index("--")
        limits, extra = limits[:i], limits[i + 1:]
    off = {"--user-rate": "0", "--org-rate": "0", "--user-sessions": "0", "--org-sessions": "0"}
    args = dict(off)
    args.update(dict(zip(limits[::2], limits[1::2])))
    flat = [x for kv in args.items() for x in kv] + list(extra)
    a = Router(pki, "--store", store.url, *flat)
    try:
        b = Router(pki, "--store", store.url, *flat)
    except BaseException:
        a.stop()
        raise
    return a, b


def _rounds(rs, n, limit_s=20):
    marks = [metric(r, SYNCS) or 0 for r in rs]
    deadline = time.monotonic() + limit_s
    for r, m in zip(rs, marks):
        while (metric(r, SYNCS) or 0) < m + n:
            assert time.monotonic() < deadline, f"no limits round in {limit_s} s:\n" + \
                r.log()[-3000:]
            time.sleep(0.05)


def synced(*rs):
    """Every router published what it counted so far, then every router read that."""
    _rounds(rs, 2)  # a round that began before the last action may not have seen it
    _rounds(rs, 2)
    for r in rs:
        assert metric(r, "meshtls_router_limit_peers") == len(rs) - 1, r.log()[-3000:]


def relay_when_allowed(pki, router, who, limit_s=15):
    """Try a session until the router allows it; the live relay (kept open)."""
    deadline = time.monotonic() + limit_s
    while True:
        s = tls_conn(pki, router.port, who)
        s.sendall(b"h\n")
        got = read_line(s)
        if got == b"OK\n":
            return s
        s.close()
        assert got == TOO_MANY and time.monotonic() < deadline, (got, router.log()[-3000:])
        time.sleep(0.05)


def stop_all(*rs):
    for r in rs:
        r.stop()


def test_user_sessions_across_two_routers(pki, store):
    a, b = routers(pki, store, "--user-sessions", "3")
    try:
        # 3 sessions spread over both routers: each router alone is under the limit
        lives = [relay(pki, a.port, "alice", "h"), relay(pki, b.port, "alice", "h"),
                 relay(pki, a.port, "alice", "h")]
        synced(a, b)
        # the next one, on either router, is over it: 2 here + 1 there, 1 here + 2 there
        assert ask(pki, a.port, "alice", b"h\n") == TOO_MANY
        assert ask(pki, b.port, "alice", b"h\n") == TOO_MANY, b.log()[-3000:]
        assert ask(pki, b.port, "bob", b"h\n") == b"OK\n"  # per user
        # one closed on a: b lets one in again once it has heard
        lives.pop(0).close()
        live = relay_when_allowed(pki, b, "alice")
        synced(a, b)
        assert ask(pki, a.port, "alice", b"h\n") == TOO_MANY
        assert metric(a, 'meshtls_router_decisions_total{code="too-many-sessions"}') >= 2
        for s in lives + [live]:
            s.close()
        a_id = store.sql("SELECT router_id FROM router_limit_instances ORDER BY router_id")
        assert len(a_id) == 2
    finally:
        stop_all(a, b)
    # a clean stop takes the router's rows with it: nobody counts them any more
    assert store.sql("SELECT COUNT(*) FROM router_limit_counts")[0][0] in (0, "0")
    assert store.sql("SELECT COUNT(*) FROM router_limit_instances")[0][0] in (0, "0")


def test_org_sessions_across_two_routers(pki, store):
    a, b = routers(pki, store, "--org-sessions", "2")
    try:
        first = relay(pki, a.port, "alice", "h")
        second = relay(pki, b.port, "bob", "h")
        synced(a, b)
        # the organisation's two are open: a third user session is refused on both
        assert ask(pki, a.port, "bob", b"h\n") == TOO_MANY
        assert ask(pki, b.port, "alice", b"h\n") == TOO_MANY
        second.close()
        relay_when_allowed(pki, a, "bob").close()
        first.close()
    finally:
        stop_all(a, b)


def test_user_attempts_across_two_routers(pki, store):
    a, b = routers(pki, store, "--user-rate", "4")
    try:
        for r in (a, b, a, b):  # 4 per minute, 2 on each router
            assert ask(pki, r.port, "alice", b"h\n") == b"OK\n"
        synced(a, b)
        assert ask(pki, a.port, "alice", b"h\n") == RATE
        assert ask(pki, b.port, "alice", b"h\n") == RATE
        assert ask(pki, b.port, "bob", b"h\n") == b"OK\n"  # per user
        assert metric(b, 'meshtls_router_decisions_total{code="rate-limited"}') >= 1
        rows = store.sql("SELECT SUM(attempts) FROM router_limit_counts WHERE org_id = 'acme' "
                         "AND user_id = 'alice'")
        assert int(rows[0][0]) == 4  # refusals are not counted
    finally:
        stop_all(a, b)


def test_org_attempts_across_two_routers(pki, store):
    a, b = routers(pki, store, "--org-rate", "4")
    try:
        for r, who in ((a, "alice"), (b, "bob"), (a, "alice"), (b, "bob")):
            assert ask(pki, r.port, who, b"h\n") == b"OK\n"
        synced(a, b)
        assert ask(pki, b.port, "alice", b"h\n") == RATE
        assert ask(pki, a.port, "bob", b"h\n") == RATE
    finally:
        stop_all(a, b)


def test_killed_router_stops_counting(pki, store):
    a, b = routers(pki, store, "--user-sessions", "2")
    try:
        lives = [relay(pki, b.port, "alice", "h"), relay(pki, b.port, "alice", "h")]
        synced(a, b)
        assert ask(pki, a.port, "alice", b"h\n") == TOO_MANY
        b_id = store.sql("SELECT DISTINCT router_id FROM router_limit_counts")
        assert len(b_id) == 1, b_id
        b.proc.send_signal(signal.SIGKILL)  # no clean stop: its rows stay behind
        b.proc.wait(timeout=10)
        for s in lives:
            s.close()
        # its heartbeat stops: after RT_LIM_EXPIRE_MS (2 s) a counts alone again
        relay_when_allowed(pki, a, "alice").close()
        # ... by expiry, not because the rows went away
        left = store.sql("SELECT COUNT(*) FROM router_limit_counts WHERE router_id = "
                         f"'{b_id[0][0]}'")
        assert int(left[0][0]) >= 1
        assert metric(a, "meshtls_router_limit_peers") == 0
    finally:
        stop_all(a, b)


def wait_log(router, text, count=1, limit_s=20):
    deadline = time.monotonic() + limit_s
    while router.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n" + router.log()[-3000:]
        time.sleep(0.1)


def test_database_down_keeps_then_drops_the_others(pki, echo, pg, tmp_path):
    """The database refuses the routers: a keeps b's last counts for RT_LIM_KEEP_MS (5 s),
    then counts alone (the cache still answers the decision); back, it adds b's again."""
    store = seeded("postgres", tmp_path, echo, pg)
    a, b = routers(pki, store, "--user-sessions", "2", "--", "--stale-max", "60s")
    try:
        lives = [relay(pki, b.port, "alice", "h"), relay(pki, b.port, "alice", "h")]
        synced(a, b)
        assert ask(pki, a.port, "alice", b"h\n") == TOO_MANY  # the verdict is cached now
        r = pg.sql(f"ALTER ROLE {pg.user} NOLOGIN; SELECT pg_terminate_backend(pid) FROM "
                   f"pg_stat_activity WHERE usename = '{pg.user}'")
        assert r.returncode == 0, r.stderr
        # refused while b's last counts are kept, then let in on a's own count
        lives.append(relay_when_allowed(pki, a, "alice", limit_s=30))
        log = a.log()
        assert "limits: cannot share counts" in log, log[-3000:]
        assert "every limit now counts this router's sessions and attempts alone" in log
        assert metric(a, "meshtls_router_limit_peers") == 0
        assert pg.sql(f"ALTER ROLE {pg.user} LOGIN").returncode == 0
        wait_log(a, "limits: shared through database", count=2)
        synced(a, b)
        # b's 2 and a's 1 are counted together again
        assert ask(pki, a.port, "alice", b"h\n") == TOO_MANY
        assert ask(pki, b.port, "alice", b"h\n") == TOO_MANY
        for s in lives:
            s.close()
    finally:
        pg.sql(f"ALTER ROLE {pg.user} LOGIN")
        stop_all(a, b)
