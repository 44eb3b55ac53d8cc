"""`meshtls proxy router` and `meshtls connect` (issue 11, docs/ROUTER.md): 004's tables on
SQLite and on a real PostgreSQL, SPIFFE user identities, the connect-id line, the fixed
ERROR codes, relaying to an echo backend, bounded answers with the backend or the
database down, and ssh through it when an sshd is installed."""
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import MESHTLS, free_port, read_child_log, run, wait_port
from proxy_util import EchoServer
from servers import PasswordPostgres, pg_skip_reason

TD = "test.local"
USERS = {  # name -> SPIFFE ID
    "alice": f"spiffe://{TD}/orgs/acme/users/alice",     # on web-01 directly
    "bob": f"spiffe://{TD}/orgs/acme/users/bob",         # in team ops, listed by web-01
    "carol": f"spiffe://{TD}/orgs/acme/users/carol",     # in team dev, not listed
    "zoe": f"spiffe://{TD}/orgs/acme/users/zoe",         # in no list
    "mallory": f"spiffe://{TD}/orgs/evil/users/mallory",  # another organisation
}

NOT_FOUND = b"ERROR: not-found no such host\n"

# 004's DDL as an ssh-router creates it, before meshtls ever ran
SSH_ROUTER_DDL = (
    "CREATE TABLE backend_hosts (connect_id TEXT PRIMARY KEY, internal_ip_addr "
    "TEXT NOT NULL, org_id TEXT NOT NULL, user_ids TEXT[] NOT NULL DEFAULT '{}', "
    "team_ids TEXT[] NOT NULL DEFAULT '{}', host_user TEXT);"
    "CREATE TABLE teams (team_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, user_ids "
    "TEXT[] NOT NULL DEFAULT '{}');"
    "CREATE TABLE users (user_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, "
    "public_keys BYTEA[] NOT NULL DEFAULT '{}');")


@pytest.fixture(scope="module")
def pki():
    d = Path(tempfile.mkdtemp(prefix="meshtls-router-"))
    ca = d / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", TD, check=True)
    run("ca", "register", "--dir", ca, "router", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "register", "--dir", ca, "web", check=True)  # a service SVID
    for name, sid in USERS.items():
        run("ca", "register", "--dir", ca, name, "--spiffe-id", sid, check=True)
    for name in ("router", "web", *USERS):
        run("ca", "issue", "--dir", ca, name, "--out", d / "certs", check=True)
    # a second CA, trusted too (CA rotation), whose users are of another issuer
    run("ca", "init", "--dir", d / "other", "--trust-domain", "other.local", check=True)
    run("ca", "register", "--dir", d / "other", "alice", "--spiffe-id",
        "spiffe://other.local/orgs/acme/users/alice", check=True)
    run("ca", "issue", "--dir", d / "other", "alice", "--out", d / "other-certs", check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Router:
    """A running `meshtls proxy router`; .port, .log(), stopped by PID.  env: variables to
    set over the test's, None to unset one."""

    def __init__(self, pki, *args, env=None):
        c = pki / "certs"
        argv = [MESHTLS, "proxy", "router", "--listen", "127.0.0.1:0",
                "--cert", c / "router.crt", "--key", c / "router.key",
                "--cacert", f"{c / 'ca.crt'},{pki / 'other-certs' / 'ca.crt'}",
                "--issuer", TD, "--workers", "2", "--status", "127.0.0.1:0", *args]
        self.logfile = tempfile.TemporaryFile("w+")
        full_env = {k: v for k, v in dict(os.environ, **(env or {})).items() if v is not None}
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                     stderr=self.logfile, text=True, env=full_env)
        self.port = self.status_port = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"(listening|status) on .*:(\d+)$", line.strip())
            if m and m.group(1) == "listening":
                self.port = int(m.group(2))
            elif m:
                self.status_port = int(m.group(2))
        if self.port is None:
            self.stop()
            raise AssertionError(f"router did not start:\n{self.log()}")

    def log(self):
        return read_child_log(self.logfile)

    def get(self, path):
        """(status, body) of GET path on the status listener."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}{path}",
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        log = self.log()
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert bad not in log, log[-4000:]
        return self.proc.returncode


def tls_conn(pki, port, who, certs="certs", timeout=10):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "certs" / "ca.crt")
    if who:
        ctx.load_cert_chain(pki / certs / f"{who}.crt", pki / certs / f"{who}.key")
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_line(s, cap=1024):
    out = b""
    while not out.endswith(b"\n") and len(out) < cap:
        try:
            b = s.recv(1)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not b:
            break
        out += b
    return out


def ask(pki, port, who, line, certs="certs"):
    """Send `line` as `who`; the router's answer line."""
    with tls_conn(pki, port, who, certs) as s:
        if line:
            s.sendall(line)
        return read_line(s)


def connect(pki, port, who, cid, data=b"", timeout=20):
    c = pki / "certs"
    return subprocess.run([MESHTLS, "connect", "--proxy", f"localhost:{port}",
                           "--cert", c / f"{who}.crt", "--key", c / f"{who}.key",
                           "--cacert", c / "ca.crt", "--connect-id", cid],
                          input=data, capture_output=True, timeout=timeout)


def seed_sql(echo_port, down_port, arr):
    """004's rows; arr(list) renders an array literal for the backend."""
    return [
        ("INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, user_ids, team_ids) "
         f"VALUES ('web-01', '127.0.0.1:{echo_port}', 'acme', {arr(['alice'])}, "
         f"{arr(['ops', 'evilteam'])})"),
        ("INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, user_ids, team_ids) "
         f"VALUES ('evil-01', '127.0.0.1:{echo_port}', 'evil', {arr(['mallory', 'alice'])}, "
         f"{arr([])})"),
        ("INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, user_ids, team_ids) "
         f"VALUES ('down-01', '127.0.0.1:{down_port}', 'acme', {arr(['alice'])}, {arr([])})"),
        f"INSERT INTO teams (team_id, org_id, user_ids) VALUES ('ops', 'acme', {arr(['bob'])})",
        f"INSERT INTO teams (team_id, org_id, user_ids) VALUES ('dev', 'acme', {arr(['carol'])})",
        ("INSERT INTO teams (team_id, org_id, user_ids) VALUES ('evilteam', 'evil', "
         f"{arr(['mallory', 'zoe'])})"),
    ]


def sqlite_arr(v):
    return "'" + "[" + ",".join(f'"{x}"' for x in v) + "]'"


def pg_arr(v):
    return "ARRAY[" + ",".join(f"'{x}'" for x in v) + "]::text[]" if v else "'{}'::text[]"


@pytest.fixture(scope="module")
def echo():
    e = EchoServer()
    yield e
    e.close()


@pytest.fixture(scope="module")
def sqlite_router(pki, echo):
    db = pki / "router.db"
    r = run("proxy", "router", "--listen", "127.0.0.1:0", "--cert", pki / "certs/router.crt",
            "--key", pki / "certs/router.key", "--cacert", pki / "certs/ca.crt",
            "--issuer", TD, "--store", f"sqlite:{db}", "--check")
    assert r.returncode == 0, r.stderr
    assert "reachable" in r.stdout
    con = sqlite3.connect(db)
    for q in seed_sql(echo.port, free_port(), sqlite_arr):
        con.execute(q)
    con.commit()
    con.close()
    router = Router(pki, "--store", f"sqlite:{db}", "--line-timeout", "1s")
    yield router
    router.stop()


def test_allowed_directly_relays_both_ways_with_half_close(pki, sqlite_router):
    p = connect(pki, sqlite_router.port, "alice", "web-01", data=b"hello through the router\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hello through the router\n"
    with tls_conn(pki, sqlite_router.port, "alice") as s:
        s.sendall(b"web-01\nand bytes sent with the line")  # pipelined after the line
        assert read_line(s) == b"OK\n"
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 28 and time.monotonic() < deadline:
            got += s.recv(100)
        assert got == b"and bytes sent with the line"
    assert '"decision":"allow"' in sqlite_router.log() or "decision=allow" in sqlite_router.log()


def test_allowed_through_a_team_and_crlf(pki, sqlite_router):
    assert ask(pki, sqlite_router.port, "bob", b"web-01\r\n") == b"OK\n"


def test_session_resumption(pki, sqlite_router):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "certs" / "ca.crt")
    ctx.load_cert_chain(pki / "certs" / "bob.crt", pki / "certs" / "bob.key")
    session = None
    for attempt in range(2):
        raw = socket.create_connection(("127.0.0.1", sqlite_router.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"web-01\n")
            assert read_line(s) == b"OK\n"
            if attempt:
                assert s.session_reused
            session = s.session


def test_refusals_and_indistinguishable_not_found(pki, sqlite_router):
    port = sqlite_router.port
    forb = b"ERROR: forbidden you are not granted access to this host\n"
    assert ask(pki, port, "carol", b"web-01\n") == forb   # team not listed
    assert ask(pki, port, "zoe", b"web-01\n") == forb     # in no list (member of evil's team)
    # another organisation's host, a listed team of another organisation, and an unknown id:
    # the same bytes
    assert ask(pki, port, "alice", b"evil-01\n") == NOT_FOUND
    assert ask(pki, port, "mallory", b"web-01\n") == NOT_FOUND
    assert ask(pki, port, "alice", b"no-such-host\n") == NOT_FOUND
    p = connect(pki, port, "alice", "no-such-host")
    assert p.returncode == 1 and p.stderr == NOT_FOUND and p.stdout == b""


def test_bad_identities(pki, sqlite_router):
    bad = b"ERROR: bad-identity "
    assert ask(pki, sqlite_router.port, "web", b"web-01\n").startswith(bad)  # service SVID
    # trusted (second CA file), but another issuer
    assert ask(pki, sqlite_router.port, "alice", b"web-01\n", certs="other-certs").startswith(bad)
    assert "not a user identity" in sqlite_router.log()


def forge(pki, out, name, uris, expired=False):
    """A client certificate from pki's intermediate with URI SANs `uris` (any number),
    possibly expired: what `meshtls ca` refuses to make."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca = pki / "ca"
    ikey = serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(), None)
    icert = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    nb, na = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired
              else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)))
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(icert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    if uris:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), False)
    cert = b.sign(ikey, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) +
                                      icert.public_bytes(serialization.Encoding.PEM))
    (out / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (out / f"{name}.key").chmod(0o600)


def test_forged_identities(pki, sqlite_router):
    out = pki / "forged"
    alice = USERS["alice"]
    forge(pki, out, "two", [alice, f"spiffe://{TD}/orgs/acme/users/bob"])
    forge(pki, out, "nosan", [])
    forge(pki, out, "expired", [alice], expired=True)
    for who in ("two", "nosan"):
        assert ask(pki, sqlite_router.port, who, b"web-01\n", certs="forged").startswith(
            b"ERROR: bad-identity "), who
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        got = ask(pki, sqlite_router.port, "expired", b"web-01\n", certs="forged")
        if not got:
            raise ConnectionResetError("closed without an answer")
    assert "no SPIFFE ID" in sqlite_router.log()


@pytest.mark.parametrize("line", [
    b"\n", b"a" * 300 + b"\n", b"a" * 5000, b"\x00\x01\xff\n", b"web 01\n",
    b"x';DROP TABLE backend_hosts;--\n", "h\u00f4te\n".encode(), b"web-01\r\r\n"])
def test_bad_lines(pki, sqlite_router, line):
    assert ask(pki, sqlite_router.port, "alice", line).startswith(b"ERROR: bad-request ")
    assert ask(pki, sqlite_router.port, "alice", b"web-01\n") == b"OK\n"  # tables intact


def test_slow_line_times_out(pki, sqlite_router):
    t0 = time.monotonic()
    with tls_conn(pki, sqlite_router.port, "alice") as s:
        s.sendall(b"web")
        assert read_line(s) == b"ERROR: timeout the connect id line did not arrive in time\n"
    assert time.monotonic() - t0 < 4


def test_backend_down(pki, sqlite_router):
    t0 = time.monotonic()
    assert ask(pki, sqlite_router.port, "alice", b"down-01\n").startswith(
        b"ERROR: backend-unavailable ")
    assert time.monotonic() - t0 < 6


def test_status_endpoints(pki, sqlite_router):
    assert ask(pki, sqlite_router.port, "alice", b"web-01\n") == b"OK\n"
    assert sqlite_router.get("/healthz")[0] == 200
    assert sqlite_router.get("/readyz")[0] == 200
    code, body = sqlite_router.get("/metrics")
    assert code == 200
    ok = re.search(r'^meshtls_router_decisions_total\{code="ok"\} (\d+)', body, re.M)
    assert ok and int(ok.group(1)) >= 1
    assert re.search(r'^meshtls_router_decisions_total\{code="not-found"\} [1-9]', body, re.M)
    assert "meshtls_router_decision_duration_seconds_count" in body
    assert "meshtls_router_relays_active" in body
    assert re.search(r"^meshtls_router_database_up 1", body, re.M)


def metric_value(router, pattern):
    """The value of the /metrics line matching `pattern` (a regex of the name and labels)."""
    code, body = router.get("/metrics")
    assert code == 200
    m = re.search(r"^" + pattern + r" (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$", body, re.M)
    assert m, f"{pattern} not in /metrics:\n{body[-3000:]}"
    return float(m.group(1))


def test_connection_log(pki, sqlite_router):
    """router_connections: who, which host, result, bytes each way, started_at, duration,
    decision time; and /metrics' byte counters move by the relayed bytes."""
    up_before = metric_value(sqlite_router, r'meshtls_bytes_total\{direction="upstream"\}')
    down_before = metric_value(sqlite_router, r'meshtls_bytes_total\{direction="downstream"\}')
    payload = b"0123456789" * 700  # 7000 bytes each way through the echo
    t_start = int(time.time() * 1000)
    with tls_conn(pki, sqlite_router.port, "bob") as s:
        s.sendall(b"web-01\n")
        assert read_line(s) == b"OK\n"
        s.sendall(payload)
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(payload) and time.monotonic() < deadline:
            b = s.recv(65536)
            if not b:
                break
            got += b
        assert got == payload
        time.sleep(0.3)  # the relay lives at least this long: a floor for duration_ms
    t_end = int(time.time() * 1000)
    assert ask(pki, sqlite_router.port, "carol", b"web-01\n").startswith(b"ERROR: forbidden")
    db = pki / "router.db"
    rows = []
    q = ("SELECT org_id, user_id, connect_id, result, bytes_up, bytes_down, started_at_ms, "
         "duration_ms, decision_us, target FROM router_connections WHERE (user_id = 'bob' AND "
         "bytes_up = ?) OR (user_id = 'carol' AND started_at_ms >= ?)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        con = sqlite3.connect(db, timeout=5)
        rows = con.execute(q, (len(payload), t_start)).fetchall()
        con.close()
        if {r[1] for r in rows} >= {"bob", "carol"}:
            break
        time.sleep(0.1)
    bob = [r for r in rows if r[1] == "bob"]
    carol = [r for r in rows if r[1] == "carol"]
    assert len(bob) == 1 and carol, rows
    org, user, cid, result, up, down, at, dur, dec, target = bob[0]
    assert (org, user, cid, result) == ("acme", "bob", "web-01", "ok")
    assert up == len(payload) and down == len(payload)  # the OK line is not relayed bytes
    assert t_start - 1000 <= at <= t_end, (t_start, at, t_end)
    assert dur >= 300 and at + dur <= t_end + 1000, (at, dur, t_end)
    assert 0 <= dec <= dur * 1000  # 0 when the cache answered within a microsecond
    assert target and target.startswith("127.0.0.1:")
    c = carol[-1]
    assert (c[0], c[2], c[3], c[4], c[5]) == ("acme", "web-01", "forbidden", 0, 0), c
    assert c[8] >= 0 and c[7] >= 0
    assert metric_value(sqlite_router,
                        r'meshtls_bytes_total\{direction="upstream"\}') - up_before >= len(payload)
    assert metric_value(sqlite_router, r'meshtls_bytes_total\{direction="downstream"\}') - \
        down_before >= len(payload)
    out = run("router", "--store", f"sqlite:{db}", "connections", "--org", "acme").stdout
    assert "carol" in out and "forbidden" in out


def test_commands_invalidate_the_cache(pki, echo, tmp_path):
    """A long --cache-ttl, yet a `meshtls router` change refuses at once (router_changes)."""
    store = f"sqlite:{tmp_path / 'inv.db'}"
    run("router", "--store", store, "hosts", "add", "h", "--org", "acme", "--addr",
        f"127.0.0.1:{echo.port}", check=True)
    run("router", "--store", store, "grant", "h", "--user", "alice", check=True)
    router = Router(pki, "--store", store, "--cache-ttl", "60s", "--recheck-interval", "0")
    try:
        assert ask(pki, router.port, "alice", b"h\n") == b"OK\n"
        assert ask(pki, router.port, "alice", b"h\n") == b"OK\n"  # from the cache
        run("router", "--store", store, "revoke", "h", "--user", "alice", check=True)
        t0 = time.monotonic()
        while ask(pki, router.port, "alice", b"h\n") == b"OK\n":
            assert time.monotonic() - t0 < 1.0, "the cache outlived a meshtls router change"
            time.sleep(0.05)
    finally:
        router.stop()


def test_limits(pki, echo, tmp_path):
    store = f"sqlite:{tmp_path / 'lim.db'}"
    run("router", "--store", store, "hosts", "add", "h", "--org", "acme", "--addr",
        f"127.0.0.1:{echo.port}", check=True)
    run("router", "--store", store, "grant", "h", "--user", "alice", check=True)
    run("router", "--store", store, "grant", "h", "--user", "bob", check=True)
    router = Router(pki, "--store", store, "--user-rate", "3", "--user-sessions", "1")
    try:
        first = tls_conn(pki, router.port, "alice")
        first.sendall(b"h\n")
        assert read_line(first) == b"OK\n"
        assert ask(pki, router.port, "alice", b"h\n") == (
            b"ERROR: too-many-sessions too many open sessions; close one first\n")
        assert ask(pki, router.port, "bob", b"h\n") == b"OK\n"  # per user
        first.close()
        time.sleep(0.3)
        assert ask(pki, router.port, "alice", b"h\n") == b"OK\n"  # released
        assert ask(pki, router.port, "alice", b"h\n").startswith(b"ERROR: rate-limited ")
    finally:
        router.stop()


REVOKED = b"ERROR: revoked the client certificate has been revoked; ask for a new one\n"


def test_revoked_certificate(pki, tmp_path):
    """--crl: a revoked user certificate completes the handshake and gets `ERROR: revoked`
    (after its line, or at --line-timeout without one), never a relayed byte; audited,
    counted, logged in router_connections.  Any other failure still fails the handshake."""
    ca = pki / "ca"
    run("ca", "register", "--dir", ca, "rev", "--spiffe-id", f"spiffe://{TD}/orgs/acme/users/rev",
        check=True)
    run("ca", "issue", "--dir", ca, "rev", "--out", tmp_path, check=True)
    run("ca", "revoke", "--dir", ca, "rev", check=True)
    run("ca", "crl", "--dir", ca, "--out", tmp_path / "crl.pem", check=True)
    db = tmp_path / "rev.db"
    store = f"sqlite:{db}"
    echo = EchoServer()  # its own: no other test's bytes in its count
    run("router", "--store", store, "hosts", "add", "h", "--org", "acme", "--addr",
        f"127.0.0.1:{echo.port}", check=True)
    run("router", "--store", store, "grant", "h", "--user", "rev", check=True)
    run("router", "--store", store, "grant", "h", "--user", "alice", check=True)
    router = Router(pki, "--store", store, "--crl", tmp_path / "crl.pem", "--line-timeout", "1s")
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki / "certs" / "ca.crt")
        ctx.load_cert_chain(tmp_path / "rev.crt", tmp_path / "rev.key")

        def revoked_conn():
            raw = socket.create_connection(("127.0.0.1", router.port), timeout=5)
            return ctx.wrap_socket(raw, server_hostname="localhost")

        with revoked_conn() as s:  # the line, with bytes meant for the host after it
            s.sendall(b"h\nnot for the host")
            assert read_line(s) == REVOKED
            assert s.recv(100) == b""  # closed: nothing relayed back
        t0 = time.monotonic()
        with revoked_conn() as s:  # no line at all: the answer comes at --line-timeout
            assert read_line(s) == REVOKED
        assert time.monotonic() - t0 < 4
        # a resumed session of a revoked certificate: still refused
        with revoked_conn() as s:
            s.sendall(b"h\n")
            assert read_line(s) == REVOKED
            session = s.session
        raw = socket.create_connection(("127.0.0.1", router.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"h\n")
            assert read_line(s) == REVOKED
            assert s.session_reused  # no verification ran: the router's CRL lookup refused
        p = subprocess.run([MESHTLS, "connect", "--proxy", f"localhost:{router.port}",
                            "--cert", tmp_path / "rev.crt", "--key", tmp_path / "rev.key",
                            "--cacert", pki / "certs" / "ca.crt", "--connect-id", "h"],
                           input=b"hello", capture_output=True, timeout=20)
        assert p.returncode == 1 and p.stderr == REVOKED and p.stdout == b"", p.stderr
        assert echo.connections == 0  # the host never saw a byte of theirs
        assert ask(pki, router.port, "alice", b"h\n") == b"OK\n"
        # anything else still fails the handshake: an expired certificate
        forge(pki, tmp_path / "forged", "expired", [USERS["alice"]], expired=True)
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            got = ask(pki, router.port, "expired", b"h\n", certs=tmp_path / "forged")
            if not got:
                raise ConnectionResetError("closed without an answer")
        log = router.log()
        assert re.search(r'"code":"revoked".*"reason":"the client certificate \(serial '
                         r'[0-9A-Fa-f:]+\) is revoked', log) or "code=revoked" in log, log[-3000:]
        code, body = router.get("/metrics")
        m = re.search(r'^meshtls_router_decisions_total\{code="revoked"\} (\d+)', body, re.M)
        assert m and int(m.group(1)) >= 5, body
        rows = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(rows) < 5:
            con = sqlite3.connect(db, timeout=5)
            rows = con.execute("SELECT org_id, user_id, result, bytes_up, bytes_down FROM "
                               "router_connections WHERE user_id = 'rev'").fetchall()
            con.close()
            time.sleep(0.1)
        assert len(rows) >= 5 and all(r == ("acme", "rev", "revoked", 0, 0) for r in rows), rows
    finally:
        router.stop()
        echo.close()


def test_config_file_and_environment(pki, tmp_path):
    """The same keys from YAML (router: section) and MESHTLS_ROUTER_*; flags win."""
    c = pki / "certs"
    cfg = tmp_path / "router.yaml"
    cfg.write_text(f"router:\n  listen: 127.0.0.1:0\n  cert: {c / 'router.crt'}\n"
                   f"  key: {c / 'router.key'}\n  cacert: {c / 'ca.crt'}\n"
                   f"  issuer: wrong.example\n  line_timeout: 2s\n")
    env = {"MESHTLS_ROUTER_STORE": f"sqlite:{tmp_path / 'env.db'}"}
    p = run("proxy", "router", "--config", cfg, "--issuer", TD, "--check", env=env)
    assert p.returncode == 0, p.stderr
    assert f"issuer {TD}" in p.stdout and "env.db" in p.stdout
    p = run("proxy", "router", "--config", cfg, "--check", env=env)
    assert p.returncode == 0 and "issuer wrong.example" in p.stdout  # from the file
    cfg.write_text(cfg.read_text() + "  user_rate: lots\n")
    p = run("proxy", "router", "--config", cfg, "--check", env=env)
    assert p.returncode != 0 and "router.yaml:8" in p.stderr and "user_rate" in p.stderr, p.stderr
    cfg.write_text(cfg.read_text().replace("  user_rate: lots\n", ""))
    p = run("proxy", "router", "--config", cfg, "--check")  # no store anywhere
    assert p.returncode == 2 and "router.store" in p.stderr, p.stderr


def test_ssh_config_block(pki):
    p = run("connect", "--ssh-config", "--proxy", "router.example:4443", "--cert",
            pki / "certs/alice.crt", "--key", pki / "certs/alice.key", "--cacert",
            pki / "certs/ca.crt", "--host", "*.internal")
    assert p.returncode == 0
    assert "Host *.internal" in p.stdout and "--connect-id %h" in p.stdout
    assert str(pki / "certs/alice.key") in p.stdout


def data_commands(store, echo_port):
    """Build 004's data with `meshtls router` alone; returns the `check` answers."""
    def r(*a, ok=True):
        p = run("router", "--store", store, *a)
        assert (p.returncode == 0) == ok, (a, p.stdout, p.stderr)
        return p
    r("hosts", "add", "app-01", "--org", "acme", "--addr", f"127.0.0.1:{echo_port}")
    r("teams", "add", "ops2", "--org", "acme")
    r("teams", "add", "evil2", "--org", "evil")
    r("members", "add", "ops2", "bob")
    r("grant", "app-01", "--user", "alice")
    r("grant", "app-01", "--user", "alice")  # idempotent
    r("grant", "app-01", "--team", "ops2")
    r("grant", "app-01", "--team", "evil2", ok=False)  # another organisation's team
    r("hosts", "add", "bad", "--org", "acme", "--addr", "1.2.3.4:99999", ok=False)
    r("hosts", "add", "x';--", "--org", "acme", "--addr", "1.2.3.4", ok=False)
    out = r("list", "--org", "acme").stdout
    assert "app-01\tacme" in out and "alice" in out and "ops2" in out
    assert r("orgs").stdout.split() == ["ORG", "acme", "evil"]
    assert r("check", "app-01", "--org", "acme", "--user", "bob").stdout.startswith("OK\n")
    assert r("check", "app-01", "--org", "evil", "--user", "bob",
             ok=False).stdout == NOT_FOUND.decode()
    r("members", "rm", "ops2", "bob")
    assert r("check", "app-01", "--org", "acme", "--user", "bob",
             ok=False).stdout.startswith("ERROR: forbidden")


def test_data_commands_sqlite(pki, echo, tmp_path):
    store = f"sqlite:{tmp_path / 'cmd.db'}"
    data_commands(store, echo.port)
    router = Router(pki, "--store", store)
    try:
        assert ask(pki, router.port, "alice", b"app-01\n") == b"OK\n"
        assert ask(pki, router.port, "bob", b"app-01\n").startswith(b"ERROR: forbidden")
        live = tls_conn(pki, router.port, "alice")
        live.sendall(b"app-01\nping")
        assert read_line(live) == b"OK\n"
        assert live.recv(4) == b"ping"
        run("router", "--store", store, "revoke", "app-01", "--user", "alice", check=True)
        t_revoke = time.monotonic()
        # the decision cache (--cache-ttl 500ms) lets a removed grant refuse within a second
        t0 = time.monotonic()
        while ask(pki, router.port, "alice", b"app-01\n") == b"OK\n":
            assert time.monotonic() - t0 < 1.0, "a removed grant still allowed after 1 s"
            time.sleep(0.05)
        # the live relay is cut within two seconds (--recheck-interval 1s)
        live.settimeout(3)
        try:
            while live.recv(100):
                pass
        except (ssl.SSLError, ConnectionResetError):
            pass
        assert time.monotonic() - t_revoke < 2.5
        live.close()
        assert "the grant was removed" in router.log()
    finally:
        router.stop()


@pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason()))
def test_postgres_existing_ssh_router_database(pki, echo):
    pg = PasswordPostgres()
    router = None
    try:
        # the ssh-router made these tables (004's DDL) before meshtls ever ran
        ddl = SSH_ROUTER_DDL
        sql = ddl + ";".join(seed_sql(echo.port, free_port(), pg_arr)) + ";"
        r = subprocess.run(["psql", pg.url(), "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        router = Router(pki, "--db-host", "127.0.0.1", "--db-port", pg.port, "--db-user",
                        pg.user, "--db-name", pg.dbname, "--db-password", pg.password,
                        "--authz-timeout", "2s", "--log-level", "debug", "--stale-max", "3s")
        cmdline = Path(f"/proc/{router.proc.pid}/cmdline").read_bytes()
        assert pg.password.encode() not in cmdline
        p = connect(pki, router.port, "alice", "web-01", data=b"pg says hi\n")
        assert p.returncode == 0, p.stderr + router.log().encode()
        assert p.stdout == b"pg says hi\n"
        assert ask(pki, router.port, "bob", b"web-01\n") == b"OK\n"
        assert ask(pki, router.port, "mallory", b"web-01\n") == NOT_FOUND
        assert ask(pki, router.port, "alice", b"evil-01\n") == NOT_FOUND
        assert ask(pki, router.port, "carol", b"web-01\n").startswith(b"ERROR: forbidden")
        # the pre-existing tables were used as they are
        r = subprocess.run(["psql", pg.url(), "-Atc",
                            "SELECT max(version) FROM router_schema_migrations"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "5", r.stdout + r.stderr
        # the data commands work on the ssh-router's TEXT[] columns too
        data_commands(pg.url(), echo.port)
        assert ask(pki, router.port, "alice", b"app-01\n") == b"OK\n"
        # a second router on the same database behaves as one with the first
        router2 = Router(pki, "--store", pg.url(), "--stale-max", "0")
        try:
            assert ask(pki, router2.port, "alice", b"app-01\n") == b"OK\n"
            assert ask(pki, router2.port, "mallory", b"app-01\n") == NOT_FOUND
            run("router", "--store", pg.url(), "revoke", "app-01", "--user", "alice", check=True)
            time.sleep(1.0)  # past --cache-ttl on both
            for r in (router, router2):
                assert ask(pki, r.port, "alice", b"app-01\n").startswith(b"ERROR: forbidden")
            run("router", "--store", pg.url(), "grant", "app-01", "--user", "alice", check=True)
            cmdline = Path(f"/proc/{router2.proc.pid}/cmdline").read_bytes()
            assert pg.password.encode() not in cmdline  # --store URL: hidden too
        finally:
            router2.stop()
        # the database refuses the router (logins off, sessions cut), then takes it back: a
        # bounded authz-unavailable meanwhile, and recovery without a restart
        r = pg.sql(f"ALTER ROLE {pg.user} NOLOGIN; SELECT pg_terminate_backend(pid) FROM "
                   f"pg_stat_activity WHERE usename = '{pg.user}'")
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        assert ask(pki, router.port, "bob", b"evil-01\n").startswith(b"ERROR: authz-unavailable ")
        assert time.monotonic() - t0 < 5
        assert pg.sql(f"ALTER ROLE {pg.user} LOGIN").returncode == 0
        deadline = time.monotonic() + 10
        while True:
            got = ask(pki, router.port, "zoe", b"web-01\n")
            if got.startswith(b"ERROR: forbidden") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got.startswith(b"ERROR: forbidden"), got  # a database answer again
        # the watcher is back too (/readyz): it flushed the cache, as it may have missed
        # changes meanwhile; what is cached from here on is fresh
        deadline = time.monotonic() + 10
        while router.get("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        # the database goes away: decisions made within --stale-max still answer, anything
        # else gets a bounded authz-unavailable, and after --stale-max everything does
        assert ask(pki, router.port, "alice", b"web-01\n") == b"OK\n"
        pg.stop()
        t_down = time.monotonic()
        time.sleep(0.6)  # past --cache-ttl: the database is asked, fails, the cache answers
        assert ask(pki, router.port, "alice", b"web-01\n") == b"OK\n"  # stale, in bound
        assert "answered from the cache" in router.log()
        t0 = time.monotonic()
        assert ask(pki, router.port, "bob", b"evil-01\n").startswith(b"ERROR: authz-unavailable ")
        assert time.monotonic() - t0 < 5
        while time.monotonic() - t_down < 3.5:
            time.sleep(0.1)
        t0 = time.monotonic()
        assert ask(pki, router.port, "alice", b"web-01\n").startswith(
            b"ERROR: authz-unavailable ")
        assert time.monotonic() - t0 < 5
        deadline = time.monotonic() + 5
        while router.get("/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert router.get("/readyz")[0] == 503
        assert router.get("/healthz")[0] == 200
        assert pg.password not in router.log()
    finally:
        if router:
            router.stop()
        pg.stop()


def test_check_unreachable_postgres(pki):
    """--check against a PostgreSQL nobody answers: exit 1, the database named, the password
    not; bounded by the router's 5 s connect timeout."""
    # refused at once; TEST-NET-1: unroutable (refused or silent, by the network)
    for host in ("127.0.0.1", "192.0.2.1"):
        port = free_port() if host == "127.0.0.1" else 5432
        url = f"postgres://router:s3cret-pw@{host}:{port}/nodb"
        t0 = time.monotonic()
        p = run("proxy", "router", "--listen", "127.0.0.1:0", "--cert", pki / "certs/router.crt",
                "--key", pki / "certs/router.key", "--cacert", pki / "certs/ca.crt", "--issuer",
                TD, "--store", url, "--check", timeout=30)
        assert p.returncode == 1, (host, p.returncode, p.stderr)
        assert time.monotonic() - t0 < 20
        assert "cannot connect to database" in p.stderr, p.stderr
        assert host in p.stderr and "nodb" in p.stderr, p.stderr
        assert "s3cret-pw" not in p.stderr + p.stdout


@pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason()))
def test_postgres_password_from_pgpassword_and_pgpass(pki, echo, tmp_path):
    """A URL without a password: libpq takes it from PGPASSWORD, or from ~/.pgpass (HOME a
    temporary directory); without either the router is refused, naming the database."""
    pg = PasswordPostgres()
    url = pg.url(password=False)
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(f"127.0.0.1:{pg.port}:{pg.dbname}:{pg.user}:{pg.password}\n")
    (home / ".pgpass").chmod(0o600)
    base = {"PGPASSWORD": None, "PGPASSFILE": None, "HOME": str(empty_home)}
    c = pki / "certs"
    check = ("proxy", "router", "--listen", "127.0.0.1:0", "--cert", c / "router.crt", "--key",
             c / "router.key", "--cacert", c / "ca.crt", "--issuer", TD, "--store", url,
             "--check")

    def meshtls(*args, env):
        full = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
        return subprocess.run([MESHTLS, *map(str, args)], capture_output=True, text=True,
                              env=full, timeout=60)

    routers = []
    try:
        p = meshtls(*check, env=base)
        assert p.returncode == 1 and pg.dbname in p.stderr, p.stderr
        assert pg.password not in p.stderr
        with_env = dict(base, PGPASSWORD=pg.password)
        with_file = dict(base, HOME=str(home))
        for env in (with_env, with_file):
            p = meshtls(*check, env=env)
            assert p.returncode == 0 and "reachable" in p.stdout, p.stderr
            assert pg.password not in p.stdout + p.stderr
        p = meshtls("router", "--store", url, "hosts", "add", "h", "--org", "acme", "--addr",
                    f"127.0.0.1:{echo.port}", env=with_file)
        assert p.returncode == 0, p.stderr
        p = meshtls("router", "--store", url, "grant", "h", "--user", "alice", env=with_env)
        assert p.returncode == 0, p.stderr
        for env in (with_env, with_file):
            r = Router(pki, "--store", url, env=env)
            routers.append(r)
            got = connect(pki, r.port, "alice", "h", data=b"pw from the environment\n")
            assert got.returncode == 0, got.stderr + r.log().encode()
            assert got.stdout == b"pw from the environment\n"
            assert ask(pki, r.port, "bob", b"h\n").startswith(b"ERROR: forbidden")
            assert pg.password not in r.log()
            assert pg.password.encode() not in Path(f"/proc/{r.proc.pid}/cmdline").read_bytes()
    finally:
        for r in routers:
            r.stop()
        pg.stop()


SSHD = Path("/usr/sbin/sshd")


def ssh_keys(tmp_path):
    """(user key) and its authorized_keys, for sshds started by start_sshd."""
    uk = tmp_path / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", uk], check=True)
    shutil.copy(uk.with_suffix(".pub"), tmp_path / "authorized_keys")
    os.chmod(tmp_path / "authorized_keys", 0o600)
    return uk


def start_sshd(tmp_path, name):
    """A real sshd on a free loopback port with its own host key, accepting ssh_keys'
    key; (process, port).  The caller stops it by its PID (terminate)."""
    hk = tmp_path / f"{name}_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk], check=True)
    port = free_port()
    if os.geteuid() == 0 and not Path("/run/sshd").exists():
        # sshd as root wants its privilege-separation directory (the Debian service makes it
        # at boot; a container or CI runner may not have run the service)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
                             "-h", hk, "-o", f"AuthorizedKeysFile={tmp_path / 'authorized_keys'}",
                             "-o", "StrictModes=no", "-o", "PasswordAuthentication=no",
                             "-o", f"PidFile={tmp_path / f'{name}.pid'}"],
                            stderr=subprocess.PIPE)
    return sshd, port


@pytest.mark.skipif(not SSHD.exists() or not shutil.which("ssh"),
                    reason="/usr/sbin/sshd missing: install openssh-server")
def test_ssh_through_the_router(pki, tmp_path):
    uk = ssh_keys(tmp_path)
    sshd, port = start_sshd(tmp_path, "sshd")
    db = tmp_path / "r.db"
    router = None
    try:
        wait_port(port, proc=sshd)
        r = run("proxy", "router", "--listen", "127.0.0.1:0", "--cert", pki / "certs/router.crt",
                "--key", pki / "certs/router.key", "--cacert", pki / "certs/ca.crt", "--issuer",
                TD, "--store", f"sqlite:{db}", "--check")
        assert r.returncode == 0, r.stderr
        con = sqlite3.connect(db)
        con.execute("INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, user_ids) "
                    f"VALUES ('box', '127.0.0.1:{port}', 'acme', '[\"alice\"]')")
        con.commit()
        con.close()
        router = Router(pki, "--store", f"sqlite:{db}")
        c = pki / "certs"
        pc = (f"{MESHTLS} connect --proxy localhost:{router.port} --cert {c}/alice.crt "
              f"--key {c}/alice.key --cacert {c}/ca.crt --connect-id %h")
        user = os.environ.get("USER") or "root"
        p = subprocess.run(["ssh", "-F", "/dev/null", "-i", uk, "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o",
                            f"UserKnownHostsFile={tmp_path / 'kh'}", "-o",
                            f"ProxyCommand={pc}", f"{user}@box", "echo", "via-router"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "via-router"
    finally:
        if router:
            router.stop()
        sshd.terminate()
        sshd.wait(timeout=10)


@pytest.mark.skipif(not SSHD.exists() or not shutil.which("ssh"),
                    reason="/usr/sbin/sshd missing: install openssh-server")
def test_ssh_proxyjump_chain_through_the_router(pki, tmp_path):
    """An ~/.ssh/config chain: the first hop (jump) reaches sshd 1 through `meshtls connect`
    as its ProxyCommand, the second (`ProxyJump jump`) goes on from there to sshd 2; the
    command runs on sshd 2, which sees the connection come through sshd 1."""
    uk = ssh_keys(tmp_path)
    sshd1, port1 = start_sshd(tmp_path, "sshd1")
    sshd2, port2 = start_sshd(tmp_path, "sshd2")
    store = f"sqlite:{tmp_path / 'r.db'}"
    router = None
    try:
        wait_port(port1, proc=sshd1)
        wait_port(port2, proc=sshd2)
        run("router", "--store", store, "hosts", "add", "jump", "--org", "acme", "--addr",
            f"127.0.0.1:{port1}", check=True)
        run("router", "--store", store, "grant", "jump", "--user", "alice", check=True)
        router = Router(pki, "--store", store)
        c = pki / "certs"
        user = os.environ.get("USER") or "root"
        common = (f"  User {user}\n  IdentityFile {uk}\n  BatchMode yes\n"
                  f"  StrictHostKeyChecking no\n  UserKnownHostsFile {tmp_path / 'kh'}\n")
        cfg = tmp_path / "ssh_config"
        cfg.write_text(
            "Host jump\n"
            f"  ProxyCommand {MESHTLS} connect --proxy localhost:{router.port} --cert "
            f"{c}/alice.crt --key {c}/alice.key --cacert {c}/ca.crt --connect-id %h\n"
            + common +
            f"Host inner\n  HostName 127.0.0.1\n  Port {port2}\n  ProxyJump jump\n" + common)
        p = subprocess.run(["ssh", "-F", cfg, "inner", "echo via-chain $SSH_CONNECTION"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr + router.log()
        words = p.stdout.split()
        # SSH_CONNECTION on sshd 2: client ip, client port, server ip, server port
        assert words[0] == "via-chain" and words[-1] == str(port2), p.stdout
        deadline = time.monotonic() + 10  # the log is written in batches: poll, bounded
        while True:
            rows = run("router", "--store", store, "connections").stdout
            if ("jump" in rows and "alice" in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "jump" in rows and "alice" in rows, rows
        # refused at the first hop: the chain fails with the router's line on stderr
        run("router", "--store", store, "revoke", "jump", "--user", "alice", check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = subprocess.run(["ssh", "-F", cfg, "inner", "true"], capture_output=True,
                               text=True, timeout=60)
            if p.returncode != 0:
                break
            time.sleep(0.2)
        assert p.returncode != 0 and "ERROR: forbidden" in p.stderr, p.stderr
    finally:
        if router:
            router.stop()
        for d in (sshd1, sshd2):
            d.terminate()
            d.wait(timeout=10)


def test_router_demo_script():
    """scripts/demo-router.sh (`make demo-router`): an ssh session through the router (or the
    echo host without sshd) and mallory's refusal, in its output.  (Not its closing
    `connections` listing: the log is written asynchronously, so mallory's row may not be
    there yet when the script lists it.)"""
    from conftest import SOURCE_DIR
    env = {**os.environ, "MESHTLS_BIN": MESHTLS}
    if os.geteuid() == 0 and not Path("/run/sshd").exists():
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # as test_ssh_through_the_router
    p = subprocess.run([str(SOURCE_DIR / "scripts" / "demo-router.sh")], capture_output=True,
                       text=True, timeout=120, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    if Path(SSHD).exists() and shutil.which("ssh"):
        assert re.search(r"^hello from \S+ over ssh through the router$", p.stdout, re.M), out
    else:
        assert "hello through the router" in p.stdout, out
    assert NOT_FOUND.decode() in p.stderr, out  # mallory, as if box did not exist
    assert p.stdout.rstrip().endswith("demo: ok"), out


def test_connect_timeout_idle_timeout_and_keepalives(pki, echo, tmp_path):
    """A host that never completes the TCP handshake (a listener whose backlog is full)
    gets `backend-unavailable` at --connect-timeout; a silent relay is closed at
    --idle-timeout; both sockets of a relay carry TCP keepalive timers (ss -tnoip)."""
    store = f"sqlite:{tmp_path / 't.db'}"
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)  # never accepted: once its queue is full, SYNs are dropped
    fillers = []
    router = None
    try:
        for _ in range(8):  # fill the accept queue (bounded)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(stuck.getsockname())
            fillers.append(f)
        time.sleep(0.2)
        for cid, port in (("stuck", stuck.getsockname()[1]), ("h", echo.port)):
            run("router", "--store", store, "hosts", "add", cid, "--org", "acme", "--addr",
                f"127.0.0.1:{port}", check=True)
            run("router", "--store", store, "grant", cid, "--user", "alice", check=True)
        router = Router(pki, "--store", store, "--connect-timeout", "1s", "--idle-timeout", "2s")
        t0 = time.monotonic()
        assert ask(pki, router.port, "alice", b"stuck\n") == (
            b"ERROR: backend-unavailable the host did not accept the connection\n")
        assert time.monotonic() - t0 < 6  # 1 s connect timeout, with room for a slow machine
        assert "timeout connecting to the host" in router.log()

        s = tls_conn(pki, router.port, "alice")
        s.sendall(b"h\nping")
        assert read_line(s) == b"OK\n"
        assert s.recv(4) == b"ping"
        # keepalive timers on the router's two sockets of this relay: the client's (local
        # port: the router's) and the host's (peer port: the echo's)
        seen = ""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ss = subprocess.run(["ss", "-tnoipH", "state", "established"], capture_output=True,
                                text=True, timeout=10).stdout
            lines = [ln for ln in ss.split("\n") if f"pid={router.proc.pid}," in ln]
            down = [ln for ln in lines if f"127.0.0.1:{router.port} " in ln]
            up = [ln for ln in lines if f"127.0.0.1:{echo.port} " in ln.split("users:")[0]]
            seen = "\n".join(lines)
            if down and up and all("timer:(keepalive" in ln for ln in down + up):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no keepalive timers on the relay's sockets:\n{seen}\n{ss}")
        # silent from here on: closed by --idle-timeout (2 s), bounded wait
        s.settimeout(10)
        t0 = time.monotonic()
        try:
            assert s.recv(100) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
        assert time.monotonic() - t0 < 9
        s.close()
        deadline = time.monotonic() + 5
        while "idle timeout" not in router.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "idle timeout" in router.log()
    finally:
        if router:
            router.stop()
        for f in fillers:
            f.close()
        stuck.close()
