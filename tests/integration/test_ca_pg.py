"""The CA on one real PostgreSQL shared by several `meshtls ca serve` (issue 10 section 4).

Each CA directory holds the key files and DIR/store.url, the URL of the shared database
without its password (PGPASSWORD gives it).  Directory `a` made the CA (`meshtls ca init`
with store.url in place), directory `b` got copies of the key files: two hosts, in effect.
Shown here: the `meshtls ca` commands on PostgreSQL; serials unique under concurrent /sign
at two servers; a token presented to both at once redeemed once; a revocation through one
server in the other's feed, OCSP and CRL within a second; migrations once when three
servers start together; one lifecycle run per interval; PostgreSQL stopped and started
under load (JSON 503 at once, recovery without a restart); one server killed under load
(nothing acknowledged lost, the other keeps serving); the password never in output."""
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import MESHTLS, read_child_log, run
from servers import PasswordPostgres, pg_skip_reason

pytestmark = pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason()))

TD = "pg.test"
ADMIN = "/api/admin/security/certificates"
FEED = "/api/v1/revocations"
KEY_FILES = ("root.crt", "intermediate.crt", "intermediate.key", "ca.crt", "root.crl")


@pytest.fixture(scope="module")
def pg():
    p = PasswordPostgres()
    yield p
    p.stop()


def env_for(pg):
    """The environment of every meshtls we start: the password from PGPASSWORD only."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    e["PGPASSWORD"] = pg.password
    return e


def ca_run(pg, *args, check=True, timeout=60):
    return run(*args, check=check, env=env_for(pg), timeout=timeout)


def make_ca(pg, root, dbname):
    """A fresh database `dbname`, CA directory root/a made on it, root/b a second host."""
    r = pg.sql(f"CREATE DATABASE {dbname} OWNER {pg.user}")
    assert r.returncode == 0, r.stderr
    url = f"postgres://{pg.user}@127.0.0.1:{pg.port}/{dbname}"
    a, b = root / "a", root / "b"
    for d in (a, b):
        d.mkdir(mode=0o700)
        (d / "store.url").write_text(f"# the shared CA store\n{url}\n")
    ca_run(pg, "ca", "init", "--dir", a, "--trust-domain", TD)
    for f in KEY_FILES:
        shutil.copy2(a / f, b / f)
    ca_run(pg, "ca", "register", "--dir", a, "admin")
    ca_run(pg, "ca", "register", "--dir", b, "web")
    for svc in ("admin", "web"):
        ca_run(pg, "ca", "issue", "--dir", a, svc, "--out", root / "certs")
    return url


class Server:
    """A running `meshtls ca serve --dir DIR`; .port, .status_port, .log()."""

    def __init__(self, pg, d, *args):
        self.errf = open(d.parent / f"serve-{d.name}-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen(
            [MESHTLS, "ca", "serve", "--dir", str(d), "--listen", "127.0.0.1:0",
             "--status", "127.0.0.1:0", "--admin", f"spiffe://{TD}/svc/admin",
             *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.errf, text=True, env=env_for(pg))
        self.dir = d
        self.port = self.status_port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self.port is None or self.status_port is None):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"ca serve exited {self.proc.wait()}:\n{self.log()}")
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
            elif line.startswith("status on "):
                self.status_port = int(line.rsplit(":", 1)[1])

    def log(self):
        return read_child_log(self.errf)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.errf.close()
        return self.proc.returncode


def call(server, root, method, path, body=None, svc=None, headers=None, timeout=20):
    """One HTTPS request; returns (status, parsed JSON or bytes)."""
    c = ssl.create_default_context(cafile=str(server.dir / "ca.crt"))
    if svc:
        c.load_cert_chain(str(root / "certs" / f"{svc}.crt"), str(root / "certs" / f"{svc}.key"))
    conn = http.client.HTTPSConnection("localhost", server.port, timeout=timeout, context=c)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


def make_csr(tmp, name):
    key, csr = tmp / f"{name}.key", tmp / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName=URI:spiffe://{TD}/svc/{name}"],
                   check=True, capture_output=True, timeout=30)
    return csr.read_text()


def token(pg, d, svc):
    p = ca_run(pg, "ca", "token", "--dir", d, svc, "--ttl", "10m")
    return p.stdout.strip()


def db_rows(pg, dbname, query):
    r = subprocess.run(["psql", f"postgres://{pg.user}@127.0.0.1:{pg.port}/{dbname}", "-Atc",
                        query], capture_output=True, text=True, timeout=30, env=env_for(pg))
    assert r.returncode == 0, r.stderr
    return [l for l in r.stdout.splitlines() if l]


# ---- the store itself ----------------------------------------------------------------------

def test_store_unit_tests_on_postgres(pg):
    """tests/unit/ca/test_ca_store.c on this server (it empties its database: its own)."""
    from conftest import BUILD_DIR
    binary = Path(os.environ.get("MESHTLS_BUILD_DIR", BUILD_DIR)) / "test_ca_store"
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    r = pg.sql(f"CREATE DATABASE unit OWNER {pg.user}")
    assert r.returncode == 0, r.stderr
    env = env_for(pg)
    env["MESHTLS_TEST_PG_URL"] = f"postgres://{pg.user}@127.0.0.1:{pg.port}/unit"
    p = subprocess.run([str(binary)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and "0 failures" in p.stdout, p.stdout + p.stderr
    assert "pg_write_lock_orders_writers_across_connections" in p.stdout


# ---- the command line on PostgreSQL ------------------------------------------------------

def test_ca_commands_on_postgres_from_two_hosts(pg, tmp_path):
    url = make_ca(pg, tmp_path, "cli")
    a, b = tmp_path / "a", tmp_path / "b"
    assert not (a / "meshtls.db").exists() and not (b / "meshtls.db").exists()
    # what host a issued, host b lists, revokes and publishes in its CRL
    rows = json.loads(ca_run(pg, "ca", "list", "--dir", b, "--json").stdout)
    rows = rows if isinstance(rows, list) else rows.get("certificates", rows)
    web = [r for r in rows if r["service"] == "web"]
    assert len(web) == 1 and web[0]["status"] == "active"
    ca_run(pg, "ca", "revoke", "--dir", b, "web", "--reason", "keyCompromise")
    out = ca_run(pg, "ca", "crl", "--dir", b, "--out", tmp_path / "crl.pem").stdout
    assert "1 revoked" in out, out
    crl = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert web[0]["serial"].upper().lstrip("0") in crl.replace(":", "").upper()
    # --store URL reads the same store (the password in the URL; hidden from messages)
    p = run("ca", "list", "--store", url.replace(f"{pg.user}@", f"{pg.user}:{pg.password}@"),
            check=True, env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
    assert "revoked keyCompromise" in p.stdout and pg.password not in p.stdout + p.stderr
    # the server's --check and `ca token` on the second host go through store.url too
    out = ca_run(pg, "ca", "serve", "--check", "--dir", b, "--listen", "127.0.0.1:0").stdout
    assert "configuration OK" in out
    tok = ca_run(pg, "ca", "token", "--dir", b, "web").stdout.strip()
    assert tok.startswith("mtt_") and db_rows(pg, "cli", "SELECT count(*) FROM serve_tokens") == \
        ["1"]
    # without the password the database refuses, and says where it should come from
    p = run("ca", "list", "--dir", b, env={"PGPASSWORD": "not-the-password"})
    assert p.returncode != 0 and "~/.pgpass" in p.stderr and "not-the-password" not in p.stderr
    # a second `ca init` on the same database is refused, naming what to copy instead
    c = tmp_path / "c"
    c.mkdir()
    (c / "store.url").write_text(url + "\n")
    p = ca_run(pg, "ca", "init", "--dir", c, "--trust-domain", TD, check=False)
    assert p.returncode != 0 and "already holds a CA" in p.stderr, p.stderr
    assert "intermediate.key" in p.stderr and not (c / "root.key").exists()
    # CA commands on both hosts at once wait for the CA's write lock, none fails: every
    # issue gets its own serial, every CRL its own number (consecutive, none twice)
    def work(i):
        d = a if i % 2 else b
        if i % 3 == 0:
            return ca_run(pg, "ca", "crl", "--dir", d, "--out", tmp_path / f"crl{i}.pem",
                          check=False)
        return ca_run(pg, "ca", "issue", "--dir", d, "web", "--out", tmp_path / f"o{i}",
                      check=False)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(work, range(24)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    serials = db_rows(pg, "cli", "SELECT serial FROM certificates WHERE service = 'web'")
    assert len(serials) == 1 + 16 and len(set(serials)) == len(serials)
    nums = [int(x) for x in db_rows(pg, "cli", "SELECT detail FROM audit WHERE action = 'crl' "
                                                "ORDER BY id")]
    assert len(nums) >= 1 + 8 and nums == list(range(nums[0], nums[0] + len(nums))), nums
    for r in results:
        assert pg.password not in r.stdout + r.stderr


# ---- several servers on one database ------------------------------------------------------

def start_together(pg, dirs, *args):
    """Start one server per directory at the same moment; returns them in order."""
    with concurrent.futures.ThreadPoolExecutor(len(dirs)) as ex:
        futs = [ex.submit(Server, pg, d, *args) for d in dirs]
        out, errors = [], []
        for f in futs:
            try:
                out.append(f.result(timeout=60))
            except Exception as e:  # stop the others before failing
                errors.append(e)
        if errors:
            for s in out:
                s.stop()
            raise errors[0]
    return out


@pytest.fixture(scope="module")
def cluster(pg, tmp_path_factory):
    """Three servers (a, b and a third host c) on database `multi`, started together."""
    root = tmp_path_factory.mktemp("multi")
    make_ca(pg, root, "multi")
    c = root / "c"
    c.mkdir(mode=0o700)
    shutil.copy2(root / "a" / "store.url", c / "store.url")
    for f in KEY_FILES:
        shutil.copy2(root / "a" / f, c / f)
    servers = start_together(pg, [root / "a", root / "b", c])
    yield root, servers
    logs = [s.log() for s in servers]
    codes = [s.stop() for s in servers]
    assert codes == [0, 0, 0], logs
    for log in logs:
        assert pg.password not in log


def test_store_flag_beside_dir_on_every_command(pg, tmp_path):
    # --store postgres://... beside --dir DIR (no DIR/store.url): the key files in DIR, the data
    # in PostgreSQL, on each subcommand and on `ca serve`; the password given in the URL is
    # never printed, and DIR gets no meshtls.db
    r = pg.sql(f"CREATE DATABASE flagstore OWNER {pg.user}")
    assert r.returncode == 0, r.stderr
    url = f"postgres://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/flagstore"
    noenv = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)

    def ca(*args, check=True):
        p = run("ca", *args, "--dir", d, "--store", url, env=noenv, check=check, timeout=60)
        assert pg.password not in p.stdout + p.stderr
        return p

    ca("init", "--trust-domain", TD)
    ca("register", "web")
    ca("issue", "web", "--out", tmp_path / "certs")
    assert not (d / "meshtls.db").exists() and not (d / "store.url").exists()
    assert "web" in ca("list").stdout
    assert "spiffe://pg.test/svc/web" in ca("services").stdout
    assert "revoked" in ca("revoke", "web", "--reason", "keyCompromise").stdout
    assert db_rows(pg, "flagstore", "SELECT count(*) FROM certificates") == ["1"]
    p = run("ca", "serve", "--dir", d, "--store", url, "--listen", "127.0.0.1:0", "--check",
            env=noenv, check=True)
    assert "configuration OK" in p.stdout and pg.password not in p.stdout + p.stderr
    # --dir alone finds no store: the data is not in the directory
    p = run("ca", "list", "--dir", d, env=noenv)
    assert p.returncode != 0 and pg.password not in p.stdout + p.stderr


def test_three_servers_started_together_migrate_once(pg, cluster):
    root, servers = cluster
    # each migration of each table once, however many servers raced for it
    assert db_rows(pg, "multi", "SELECT version FROM serve_migrations ORDER BY 1") == \
        ["1", "2", "3", "4"]
    assert db_rows(pg, "multi", "SELECT version FROM schema_migrations ORDER BY 1") == ["1", "2"]
    for s in servers:
        assert call(s, root, "GET", "/readyz")[0] == 200
        code, body = call(s, root, "GET", "/api/peers", svc="web")
        assert code == 200, body
    # each server's revocation watcher LISTENs on a session of its own
    r = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'multi' "
               "AND query = 'LISTEN meshtls_ca_revocations'")
    assert r.stdout.strip() == "3", r.stdout + r.stderr


def test_concurrent_sign_at_three_servers_unique_serials(pg, cluster, tmp_path):
    root, servers = cluster
    csr = make_csr(tmp_path, "web")
    toks = [token(pg, root / "a", "web") for _ in range(30)]

    def sign(i):
        return call(servers[i % 3], root, "POST", "/api/v1/sign",
                    body={"token": toks[i], "csr": csr})

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        res = list(ex.map(sign, range(len(toks))))
    assert all(code == 200 for code, _ in res), [b for c, b in res if c != 200][:3]
    serials = [b["serial"] for _, b in res]
    assert len(set(serials)) == len(serials)
    stored = set(db_rows(pg, "multi", "SELECT serial FROM certificates"))
    assert set(serials) <= stored
    # every token used once, by the server that answered
    assert db_rows(pg, "multi", "SELECT count(*) FROM serve_tokens WHERE used_at IS NULL "
                                "AND hash IN (SELECT hash FROM serve_tokens)") == ["0"]


def test_token_presented_to_two_servers_at_once_redeemed_once(pg, cluster, tmp_path):
    root, servers = cluster
    csr = make_csr(tmp_path, "web")
    for _ in range(6):
        tok = token(pg, root / "a", "web")
        barrier = threading.Barrier(2)

        def sign(s):
            barrier.wait(timeout=10)
            return call(s, root, "POST", "/api/v1/sign", body={"token": tok, "csr": csr})

        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            res = list(ex.map(sign, servers[:2]))
        codes = sorted(code for code, _ in res)
        assert codes == [200, 403], res
        loser = [b for c, b in res if c == 403][0]
        assert loser["error"]["code"] == "token_used"


def test_rotation_needed_for_an_api_issued_certificate_on_postgres(pg, cluster, tmp_path):
    """The /metrics query and the inventory field of test_ca_serve_clock.py's flagged
    certificates, on PostgreSQL: a certificate /sign issued for 2 days (a fourth server with
    --days 2) is due for the others (14 days) and only its holder can renew it."""
    root, servers = cluster
    ca_run(pg, "ca", "register", "--dir", root / "a", "brief")
    short = Server(pg, root / "a", "--days", "2", "--rotate-within", "1",
                   "--lifecycle-interval", "off")
    try:
        code, body = call(short, root, "POST", "/api/v1/sign",
                          body={"token": token(pg, root / "a", "brief"),
                                "csr": make_csr(tmp_path, "brief")})
        assert code == 200, body
    finally:
        assert short.stop() == 0
    conn = http.client.HTTPConnection("127.0.0.1", servers[1].status_port, timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    assert r.status == 200, text
    assert 'meshtls_cert_rotation_needed{service="brief"} 1' in text
    assert 'meshtls_cert_rotation_needed{service="admin"} 0' in text
    code, inv = call(servers[2], root, "GET",
                     "/api/admin/security/certificates?service=brief", svc="admin")
    assert code == 200, inv
    assert [(c["serial"], c["rotation_needed"]) for c in inv["certificates"]] == \
        [(body["serial"], True)], inv


def _ocsp(server, root, cert):
    d = server.dir
    p = subprocess.run(["openssl", "ocsp", "-issuer", str(d / "intermediate.crt"), "-cert",
                        str(cert), "-url", f"http://127.0.0.1:{server.status_port}/ocsp",
                        "-CAfile", str(d / "ca.crt"), "-no_nonce"],
                       capture_output=True, text=True, timeout=30)
    assert "Response verify OK" in p.stdout + p.stderr, p.stdout + p.stderr
    return p.stdout


def test_revocation_at_one_server_in_the_others_feed_ocsp_and_crl_within_a_second(pg, cluster):
    root, (a, b, c) = cluster
    ca_run(pg, "ca", "register", "--dir", root / "a", "feedme")
    ca_run(pg, "ca", "issue", "--dir", root / "a", "feedme", "--out", root / "feedme")
    cert = root / "feedme" / "feedme.crt"
    serial = json.loads(ca_run(pg, "ca", "list", "--dir", root / "b", "--json",
                               "--service", "feedme").stdout)
    serial = (serial if isinstance(serial, list) else serial["certificates"])[0]["serial"]
    code, body = call(b, root, "GET", f"{FEED}?since=0", svc="web")
    assert code == 200
    since = body["epoch"]
    # c has a cached "good" answer for it
    assert "feedme.crt: good" in _ocsp(c, root, cert)
    assert "feedme.crt: good" in _ocsp(c, root, cert)
    result = {}

    def follow():
        result["resp"] = call(b, root, "GET", f"{FEED}?since={since}&wait=20", svc="web")
        result["at"] = time.monotonic()

    th = threading.Thread(target=follow)
    th.start()
    time.sleep(0.5)  # the follower at b is held: nothing newer yet
    assert "resp" not in result
    code, body = call(a, root, "POST", f"{ADMIN}/feedme/revoke",
                      body={"reason": "keyCompromise", "replace": False}, svc="admin")
    revoked_at = time.monotonic()
    assert code == 200 and body["revoked"] == 1, body
    th.join(timeout=25)
    code, feed = result["resp"]
    assert code == 200
    assert [(r["serial"], r["epoch"]) for r in feed["revocations"]] == [(serial, since + 1)]
    assert result["at"] - revoked_at < 1.0
    # c: OCSP (its cache invalidated by the epoch it saw move) and the CRL it serves
    deadline = revoked_at + 1.0
    while "feedme.crt: revoked" not in _ocsp(c, root, cert):
        assert time.monotonic() < deadline, "c's OCSP still says good a second later"
        time.sleep(0.05)
    code, pem = call(c, root, "GET", "/crl", headers={"Accept": "application/x-pem-file"})
    assert code == 200 and time.monotonic() < revoked_at + 1.0
    crl = subprocess.run(["openssl", "crl", "-noout", "-text"], input=pem, capture_output=True,
                         check=True, timeout=30).stdout.decode()
    assert serial.upper() in crl.replace(":", "").upper()
    # and every server's feed agrees: one epoch per revocation, no gaps
    for s in (a, b, c):
        code, body = call(s, root, "GET", f"{FEED}?since=0", svc="web")
        epochs = [r["epoch"] for r in body["revocations"]]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs[-1] == since + 1
    # and every CRL any server signed has a number of its own
    for s in (a, b, c):
        assert call(s, root, "GET", "/crl")[0] == 200
    nums = db_rows(pg, "multi", "SELECT detail FROM audit WHERE action = 'crl'")
    assert len(nums) >= 3 and len(set(nums)) == len(nums), nums


def _active(pg, dbname, svc):
    return db_rows(pg, dbname, f"SELECT serial FROM certificates WHERE service = '{svc}' "
                               "AND status = 'active'")


def test_lifecycle_runs_once_per_interval_across_two_servers(pg, tmp_path):
    make_ca(pg, tmp_path, "life")
    ca_run(pg, "ca", "register", "--dir", tmp_path / "a", "due")
    ca_run(pg, "ca", "issue", "--dir", tmp_path / "a", "due", "--out", tmp_path / "due",
           "--days", "2")
    old = _active(pg, "life", "due")
    assert len(old) == 1
    servers = start_together(pg, [tmp_path / "a", tmp_path / "b"], "--lifecycle-interval", "1s")
    try:
        deadline = time.monotonic() + 15
        while _active(pg, "life", "due") == old and time.monotonic() < deadline:
            time.sleep(0.2)
        new = _active(pg, "life", "due")
        assert len(new) == 1 and new != old
        t0 = time.monotonic()
        time.sleep(3.2)
        logs = [s.log() for s in servers]
        runs = [l for log in logs for l in log.splitlines() if " lifecycle " in l]
        rotated = [l for log in logs for l in log.splitlines()
                   if " rotate " in l and "service=due" in l]
        # one rotation in all (idempotent); about one run per interval in all, not one per
        # server per interval (the lease in the database, and the advisory lock)
        assert len(rotated) == 1, rotated
        elapsed = time.monotonic() - t0 + 15
        assert 2 <= len(runs) <= elapsed + 2, runs
        import datetime
        at = sorted(datetime.datetime.strptime(l[:23], "%Y-%m-%dT%H:%M:%S.%f") for l in runs)
        # runs start at least the lease (0.9 s) apart; the event is logged at a run's end and
        # a run's length varies (a CRL to sign, connections), so ends may come closer; two
        # servers running in the same interval would end within a few milliseconds
        gaps = [(y - x).total_seconds() for x, y in zip(at, at[1:])]
        assert all(g >= 0.25 for g in gaps), gaps
        assert _active(pg, "life", "due") == new
    finally:
        for s in servers:
            assert s.stop() == 0


class Load:
    """Threads that keep sending one request each to the servers in turn until stopped;
    every answer is recorded as (monotonic time sent, seconds taken, status, body)."""

    def __init__(self, servers, root, n=2):
        self.servers, self.root = servers, root
        self.done = threading.Event()
        self.results, self.lock = [], threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self, i):
        k = i
        for _ in range(100000):  # bounded; stop() ends it long before
            if self.done.is_set():
                return
            s = self.servers[k % len(self.servers)]
            k += 1
            t0 = time.monotonic()
            try:
                code, body = call(s, self.root, "GET", "/api/peers", svc="web", timeout=20)
            except Exception as e:  # a hang (timeout) or a broken connection
                code, body = None, repr(e)
            with self.lock:
                self.results.append((t0, time.monotonic() - t0, code, body))
            time.sleep(0.02)

    def since(self, t):
        with self.lock:
            return [r for r in self.results if r[0] >= t]

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(timeout=30)


def test_postgres_stopped_and_started_under_load(tmp_path):
    pg2 = PasswordPostgres()
    servers, load = [], None
    try:
        make_ca(pg2, tmp_path, "down")
        servers = start_together(pg2, [tmp_path / "a", tmp_path / "b"])
        load = Load(servers, tmp_path)
        time.sleep(1.0)
        assert load.results and all(r[2] == 200 for r in load.results), load.results[:3]
        pg2.halt()
        down_at = time.monotonic()
        time.sleep(3.0)
        # while it is down: every request answered, a JSON 503 that says what to do, within
        # the bounded waits (connect_timeout 2 s), never a hang
        during = load.since(down_at + 0.5)
        assert during, "no requests while PostgreSQL was down"
        assert all(r[2] == 503 for r in during), [r for r in during if r[2] != 503][:3]
        assert all(r[3]["error"]["code"] == "store_unavailable" for r in during)
        assert max(r[1] for r in during) < 10, max(r[1] for r in during)
        for s in servers:
            assert call(s, tmp_path, "GET", "/readyz")[0] == 503
            assert call(s, tmp_path, "GET", "/healthz")[0] == 200  # alive, not ready
            code, body = call(s, tmp_path, "POST", "/api/v1/sign",
                              body={"token": "mtt_" + "A" * 43, "csr": "x"})
            assert code == 503 and body["error"]["code"] == "store_unavailable", body
        pg2.start()
        up_at = time.monotonic()
        # back by themselves, without a restart: every server answers 200 again
        ok = set()
        deadline = up_at + 30
        while len(ok) < len(servers):
            assert time.monotonic() < deadline, [s.log()[-2000:] for s in servers]
            for i, s in enumerate(servers):
                if call(s, tmp_path, "GET", "/api/peers", svc="web")[0] == 200:
                    ok.add(i)
            time.sleep(0.1)
        t = time.monotonic()
        time.sleep(1.0)
        after = load.since(t)
        assert after and all(r[2] == 200 for r in after), [r for r in after if r[2] != 200][:3]
        load.stop()
        assert all(r[2] is not None for r in load.results), \
            [r for r in load.results if r[2] is None][:3]
        # a token works again end to end
        csr = make_csr(tmp_path, "web")
        code, body = call(servers[1], tmp_path, "POST", "/api/v1/sign",
                          body={"token": token(pg2, tmp_path / "a", "web"), "csr": csr})
        assert code == 200, body
        # each revocation watcher listens again (on a new session), and a revocation at one
        # server reaches the other's held feed request within a second
        deadline = time.monotonic() + 10
        while pg2.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'down' AND "
                      "query = 'LISTEN meshtls_ca_revocations'").stdout.strip() != "2":
            assert time.monotonic() < deadline, "the watchers did not listen again"
            time.sleep(0.1)
        since = call(servers[1], tmp_path, "GET", f"{FEED}?since=0", svc="web")[1]["epoch"]
        result = {}

        def follow():
            result["resp"] = call(servers[1], tmp_path, "GET", f"{FEED}?since={since}&wait=20",
                                  svc="web")
            result["at"] = time.monotonic()

        th = threading.Thread(target=follow)
        th.start()
        time.sleep(0.3)
        code, body = call(servers[0], tmp_path, "POST", f"{ADMIN}/web/revoke",
                          body={"reason": "superseded", "replace": False}, svc="admin")
        revoked_at = time.monotonic()
        assert code == 200, body
        th.join(timeout=25)
        assert result["resp"][0] == 200 and result["resp"][1]["epoch"] > since
        assert result["at"] - revoked_at < 1.0
        for s in servers:
            log = s.log()
            assert pg2.password not in log
            assert "/api/peers: store: " in log  # each 503 logged with the database's reason
    finally:
        if load:
            load.stop()
        for s in servers:
            s.stop()
        pg2.stop()


def test_one_server_killed_under_load_loses_nothing_acknowledged(pg, tmp_path):
    make_ca(pg, tmp_path, "kill")
    a, b = start_together(pg, [tmp_path / "a", tmp_path / "b"])
    try:
        csr = make_csr(tmp_path, "web")
        toks = [token(pg, tmp_path / "a", "web") for _ in range(40)]
        acked, failed, lock = [], [], threading.Lock()
        killed = threading.Event()

        def sign(i):
            s = (a, b)[i % 2]
            try:
                code, body = call(s, tmp_path, "POST", "/api/v1/sign",
                                  body={"token": toks[i], "csr": csr})
            except Exception as e:  # a's connections die with it: not acknowledged
                with lock:
                    failed.append((i, repr(e)))
                return
            with lock:
                if code == 200:
                    acked.append((i, body["serial"]))
                else:
                    failed.append((i, code, body))
                if len(acked) >= 8 and not killed.is_set():
                    killed.set()
                    a.proc.send_signal(signal.SIGKILL)

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            list(ex.map(sign, range(len(toks))))
        assert killed.is_set() and a.proc.wait(timeout=10) == -signal.SIGKILL
        # b answered every request sent to it; what a acknowledged before dying is stored
        assert all(i % 2 == 0 for i, *_ in failed), failed
        stored = dict(r.split("|") for r in db_rows(
            pg, "kill", "SELECT serial, status FROM certificates WHERE service = 'web'"))
        for i, serial in acked:
            assert serial in stored, (i, serial)
        # b keeps serving
        assert call(b, tmp_path, "GET", "/readyz")[0] == 200
        code, body = call(b, tmp_path, "POST", "/api/v1/sign",
                          body={"token": token(pg, tmp_path / "b", "web"), "csr": csr})
        assert code == 200, body
    finally:
        a.stop()
        assert b.stop() == 0
