"""The control plane at scale (issue 10 section 5, the goals bench/ca_serve.py does not
measure), in one run:

  start-up   `meshtls ca serve` on a store of BENCH_ROWS certificates (default 1,000,000,
             BENCH_REVOKED of them revoked, over BENCH_SERVICES registered services): from
             exec to "listening on", to the first GET /healthz 200 and to the first successful
             POST /api/v1/sign; also when the start-up lifecycle run logs that it is done.
             Twice per round: as deployed (lifecycle worker on, it runs at start) and with
             --lifecycle-interval off.
  revoke     admin revokes (POST /api/admin/security/certificates/{service}/revoke,
             {"replace": false}: one active certificate each), one at a time over a kept-alive
             mTLS connection, with ~BENCH_REVOKED revoked rows present: p50/p99.  Two phases:
             with the CRL's published path remembered (`crl_out` in meta, which the start-up
             lifecycle run sets: ca_revoke() then re-signs the CRL in the request) and without
             it (the revocation only; GET /crl re-signs later); GET /crl after each phase.
  issuance   /renew keep-alive, /renew with a handshake each and /sign with one-time tokens on
             a fresh small CA on SQLite and on PostgreSQL (a server started like
             tests/integration/servers.py's PasswordPostgres, with fsync and synchronous
             commit on), side by side, same client.

The store is filled once with plain SQL through Python's sqlite3 into the schema `meshtls ca`
creates (after one start of `ca serve`, so its own tables exist too): unique random serials,
BENCH_ROWS/BENCH_SERVICES rows per service (100) issued BENCH_INTERVAL_DAYS apart (30; valid
90 days as `ca issue` makes them, so about three per service are unexpired and an admin revoke
of a service revokes those), the newest active, BENCH_REVOKED revoked at random (spread evenly over the services) and in
serve_revocations with their epochs, the rest superseded.  The certificate text of each row
is a real certificate of that service signed by the intermediate, one per service (signing a
million in Python would take minutes): the CRL code parses each row's PEM as it would; the
serial inside that PEM is not the row's.  Warm page cache (the file was just written).

Rounds: BENCH_ROUNDS (3); each round uses other services for its revokes.  Prints JSON rows
and a Markdown summary (median and range over the rounds); writes
bench/ca-scale-results-latest.json and .md.  Every server is stopped by its PID.

  BENCH_ROWS       certificate rows in the store (1000000)
  BENCH_REVOKED    of which revoked (100000)
  BENCH_SERVICES   registered services they belong to (10000)
  BENCH_INTERVAL_DAYS  days between a service's certificates (30; they are valid 90)
  BENCH_REVOKES    revokes per round without the CRL in the request (200)
  BENCH_REVOKES_CRL  revokes per round with the CRL re-signed in the request (5: seconds each)
  BENCH_SECONDS    seconds per issuance row (3); BENCH_THREADS client threads (4)
  BENCH_TOKENS     tokens per /sign row (600)
  BENCH_PARTS      which parts: scale,pg (default both); pgscale: start-up and revoke
                   (without the CRL) on PostgreSQL, the same store through COPY
  BENCH_OUT        results path without suffix (bench/ca-scale-results-latest)
"""
import csv
import http.client
import json
import os
import random
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ca_serve as cs  # noqa: E402  (mt, stop, cpu_seconds, the same client)

ROOT = Path(__file__).resolve().parents[1]
TD = cs.TD
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
REVOKED = int(os.environ.get("BENCH_REVOKED", "100000"))
SERVICES = int(os.environ.get("BENCH_SERVICES", "10000"))
INTERVAL = int(os.environ.get("BENCH_INTERVAL_DAYS", "30")) * 86400
REVOKES = int(os.environ.get("BENCH_REVOKES", "200"))
REVOKES_CRL = int(os.environ.get("BENCH_REVOKES_CRL", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TOKENS = int(os.environ.get("BENCH_TOKENS", "600"))
PARTS = os.environ.get("BENCH_PARTS", "scale,pg").split(",")
ADMIN = f"spiffe://{TD}/svc/admin"


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))] if v else None


class Serve:
    """A running `meshtls ca serve` (own session, stopped by PID); .port, .sport, and
    .lines: (monotonic time, stderr line) as they came."""

    def __init__(self, ca, *args, env=None):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [cs.MESHTLS, "ca", "serve", "--dir", str(ca), "--listen", "127.0.0.1:0",
             "--status", "127.0.0.1:0", "--admin", ADMIN, *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=env)
        self.lines = []
        threading.Thread(target=self._err, daemon=True).start()
        self.port = self.sport = None
        deadline = time.monotonic() + 60
        while (self.port is None or self.sport is None) and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                time.sleep(0.5)
                raise SystemExit("ca serve exited:\n" + "".join(l for _, l in self.lines[-20:]))
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                self.t_listen = time.monotonic() - self.t0
            elif line.startswith("status on "):
                self.sport = int(line.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain

    def _err(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    def seen(self, text):
        """Seconds from exec to the first stderr line containing text, or None."""
        for t, l in list(self.lines):
            if text in l:
                return t - self.t0
        return None

    def stop(self):
        cs.stop(self.proc)


def tls_ctx(ca, certs, name):
    c = ssl.create_default_context(cafile=str(ca / "ca.crt"))
    if name:
        c.load_cert_chain(str(certs / f"{name}.crt"), str(certs / f"{name}.key"))
    return c


def request(conn, method, path, body=None):
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    return r.status, r.read()


def csr_for(name):
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TD}/svc/{name}")]), False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


# ---- the store ------------------------------------------------------------------------------

def make_ca(work, env=None, pg_url=None):
    """A CA in work/ca with services svc and admin and their certificates in work/certs."""
    ca = work / "ca"
    if pg_url:
        ca.mkdir(mode=0o700)
        (ca / "store.url").write_text(pg_url + "\n")
    run = lambda *a: subprocess.run([cs.MESHTLS, *map(str, a)], check=True, capture_output=True,
                                    text=True, timeout=120, env=env).stdout
    run("ca", "init", "--dir", ca, "--trust-domain", TD)
    for s in ("svc", "admin"):
        run("ca", "register", "--dir", ca, s)
        run("ca", "issue", "--dir", ca, s, "--out", work / "certs")
    return ca, run


def fill(ca):
    """ROWS certificate rows over SERVICES services into ca/meshtls.db (see the top)."""
    t0 = time.monotonic()
    services, rows, revs = gen_rows(ca)
    db = sqlite3.connect(ca / "meshtls.db")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.executemany("INSERT INTO services (name, spiffe_id, dns, ips, created_at, updated_at) "
                   "VALUES (?, ?, '', '', ?, ?)", services)
    db.executemany("INSERT INTO certificates (serial, service, not_before, not_after, status, "
                   "out_dir, cert_pem, pubkey_pem, key_held, issued_at, revoked_at, reason) "
                   "VALUES (?, ?, ?, ?, ?, NULL, ?, ?, 0, ?, ?, ?)", rows)
    # the feed's epochs, as the trigger would have numbered them, after what is there
    base = db.execute("SELECT COALESCE(MAX(epoch), 0) FROM serve_revocations").fetchone()[0]
    db.executemany("INSERT INTO serve_revocations (epoch, serial, service, revoked_at, reason) "
                   "VALUES (?, ?, ?, ?, ?)", epochs(revs, base))
    db.execute("COMMIT")
    db.close()
    size = (ca / "meshtls.db").stat().st_size
    print(f"filled {ROWS:,} rows ({REVOKED:,} revoked, {SERVICES} services) in "
          f"{time.monotonic() - t0:.0f} s; store {size / 1e6:,.0f} MB", file=sys.stderr,
          flush=True)


def epochs(revs, base):
    revs.sort()
    return [(base + e + 1, s, n, r, w) for e, (r, s, n, w) in enumerate(revs)]


def gen_rows(ca):
    """(services, a generator of certificate rows, revs): revs is filled as the rows are
    consumed with (revoked_at, serial, service, reason)."""
    inter = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    ikey = serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(), None)
    now = int(time.time())
    per = ROWS // SERVICES
    rnd = random.Random(10)
    # never the newest of a service: that one is its active certificate
    revoked = set(rnd.sample([n for n in range(per * SERVICES) if n % per != per - 1], REVOKED))
    services = [(f"s{i:05d}", f"spiffe://{TD}/svc/s{i:05d}", now - per * INTERVAL,
                 now - per * INTERVAL) for i in range(SERVICES)]
    revs = []

    def rows():
        for i in range(SERVICES):
            name = f"s{i:05d}"
            k = ec.generate_private_key(ec.SECP256R1())
            nb = datetime.now(timezone.utc) - timedelta(days=10)
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                    .issuer_name(inter.subject).public_key(k.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(nb).not_valid_after(nb + timedelta(days=90))
                    .add_extension(x509.SubjectAlternativeName(
                        [x509.UniformResourceIdentifier(f"spiffe://{TD}/svc/{name}")]), False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        ikey.public_key()), False)
                    .sign(ikey, hashes.SHA256()))
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            pub = k.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
            for j in range(per):
                n = i * per + j
                issued = now - (per - 1 - j) * INTERVAL - rnd.randrange(86400)
                serial = "%032x" % rnd.getrandbits(127)
                if n in revoked:
                    st, rat, why = "revoked", min(now, issued + rnd.randrange(86400)), "keyCompromise"
                    revs.append((rat, serial, name, why))
                else:
                    st, rat, why = ("active" if j == per - 1 else "superseded"), None, None
                yield (serial, name, issued - 300, issued + 90 * 86400, st, pem, pub.decode(),
                       issued, rat, why)

    return services, rows(), revs


def query_plans(ca):
    """EXPLAIN QUERY PLAN of the statements that read the whole store (see docs)."""
    db = sqlite3.connect(ca / "meshtls.db")
    out = {}
    for name, sql in [
            ("rotate: active certificates (ca_rotate -> cert_list(NULL, 'active'))",
             "SELECT serial FROM certificates WHERE status = 'active' ORDER BY issued_at, rowid"),
            ("CRL: revoked certificates (crl_write_locked -> cert_list(NULL, 'revoked'))",
             "SELECT serial FROM certificates WHERE status = 'revoked' ORDER BY issued_at, rowid"),
            ("crl_refresh: count of revoked",
             "SELECT count(*), coalesce(max(revoked_at), 0) FROM certificates "
             "WHERE status = 'revoked'"),
            ("revoke: the service's certificates (cert_list(service, NULL))",
             "SELECT serial FROM certificates WHERE service = 's00001' ORDER BY issued_at, rowid"),
            ("feed: newest epoch", "SELECT COALESCE(MAX(epoch), 0) FROM serve_revocations")]:
        plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
        t0 = time.perf_counter()
        db.execute(sql).fetchall()
        out[name] = {"plan": "; ".join(plan), "ms": (time.perf_counter() - t0) * 1e3}
    db.close()
    return out


# ---- start-up and revoke --------------------------------------------------------------------

def startup(ca, certs, token, *args, env=None):
    """Start a server; seconds to listening, first /healthz 200, first /sign 200."""
    s = Serve(ca, *args, env=env)
    r = {"listen_s": s.t_listen}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", s.sport, timeout=30)
            st, _ = request(c, "GET", "/healthz")
            c.close()
            if st == 200:
                break
        except OSError:
            pass
        time.sleep(0.01)
    r["healthz_s"] = time.monotonic() - s.t0
    pub = tls_ctx(ca, certs, None)
    body = {"token": token, "csr": csr_for("svc")}
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPSConnection("localhost", s.port, timeout=60, context=pub)
            st, out = request(c, "POST", "/api/v1/sign", body)
            c.close()
            if st == 200:
                break
            raise SystemExit(f"first /sign: {st} {out[:300]!r}")
        except OSError:
            time.sleep(0.01)
    r["sign_s"] = time.monotonic() - s.t0
    return s, r


def wait_lifecycle(s, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = s.seen("rotate_ok")  # the run's closing event (serve.c lifecycle_run)
        if t is not None:
            return t
        time.sleep(0.05)
    return None


def revokes(ca, certs, s, services):
    """One admin revoke per service, one at a time: latencies in ms (all must be 200)."""
    ctx = tls_ctx(ca, certs, "admin")
    mk = lambda: http.client.HTTPSConnection("localhost", s.port, timeout=120, context=ctx)
    conn, lat = mk(), []
    c0 = cs.cpu_seconds(s.proc.pid)
    for name in services:
        t0 = time.perf_counter()
        st, out = request(conn, "POST", f"/api/admin/security/certificates/{name}/revoke",
                          {"reason": "keyCompromise", "replace": False})
        lat.append((time.perf_counter() - t0) * 1e3)
        if st != 200:
            raise SystemExit(f"revoke {name}: {st} {out[:300]!r}")
    cpu = cs.cpu_seconds(s.proc.pid) - c0
    conn.close()
    return {"n": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat), "cpu_ms_per_req": cpu / len(lat) * 1e3}


class RenewProbe:
    """/api/v1/renew one after another (a connection each) while something else runs: what
    issuance sees meanwhile (statuses and latencies)."""

    def __init__(self, ca, certs, s):
        self.ctx, self.port, self.out = tls_ctx(ca, certs, "svc"), s.port, []
        self.body, self.done = {"csr": csr_for("svc")}, threading.Event()
        self.t = threading.Thread(target=self._run)
        self.t.start()

    def _run(self):
        while not self.done.is_set() and len(self.out) < 10000:
            c = http.client.HTTPSConnection("localhost", self.port, timeout=120, context=self.ctx)
            t0 = time.perf_counter()
            try:
                st, _ = request(c, "POST", "/api/v1/renew", self.body)
            except OSError:
                st = 0
            self.out.append((st, (time.perf_counter() - t0) * 1e3))
            c.close()

    def result(self):
        self.done.set()
        self.t.join()
        bad = [ms for st, ms in self.out if st != 200]
        return {"n": len(self.out), "ok": len(self.out) - len(bad), "failed": len(bad),
                "statuses": sorted({st for st, _ in self.out}),
                "failed_ms_median": pct(bad, 0.5),
                "p50_ms": pct([ms for _, ms in self.out], 0.5)}


def get_crl(s, ca, certs, n=2):
    """GET /crl n times over mTLS: [(status, ms, bytes)]."""
    ctx = tls_ctx(ca, certs, "svc")
    out = []
    for _ in range(n):
        c = http.client.HTTPSConnection("localhost", s.port, timeout=120, context=ctx)
        seen = len(s.lines)
        t0 = time.perf_counter()
        st, body = request(c, "GET", "/crl")
        # on an error, what the server logged about it (the answer itself is generic)
        why = [l.strip()[-300:] for _, l in s.lines[seen:] if "/crl" in l and "WARN" in l.upper()]
        out.append({"status": st, "ms": (time.perf_counter() - t0) * 1e3, "bytes": len(body),
                    "body": body[:200].decode(errors="replace") if st != 200 else "",
                    "log": why[:2]})
        c.close()
    return out


def crl_out(ca, remove=False, set_to=None):
    """The CRL's remembered path (meta crl_out): read, removed or set."""
    db = sqlite3.connect(ca / "meshtls.db", timeout=30)
    v = db.execute("SELECT value FROM meta WHERE key = 'crl_out'").fetchone()
    if remove:
        db.execute("DELETE FROM meta WHERE key = 'crl_out'")
    if set_to:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('crl_out', ?)",
                   (str(set_to),))
    db.commit()
    db.close()
    return v[0] if v else None


def free_lease(ca):
    """As on a CA's first start: the lifecycle lease free.  A server restarted within the
    interval finds the previous one's lease and skips the start-up run (as deployed)."""
    db = sqlite3.connect(ca / "meshtls.db", timeout=30)
    db.execute("UPDATE serve_leases SET holder = '', until_ms = 0 WHERE name = 'lifecycle'")
    db.commit()
    db.close()


def part_scale(work, results):
    ca, run = make_ca(work)
    certs = work / "certs"
    s = Serve(ca, "--lifecycle-interval", "off")  # the server's own tables (migrations)
    s.stop()
    fill(ca)
    results["plans"] = query_plans(ca)
    print(json.dumps(results["plans"], indent=1), flush=True)
    order = [f"s{i:05d}" for i in range(SERVICES)]
    used = 0
    for rnd in range(ROUNDS):
        row = {"round": rnd + 1}
        for mode, args in (("lifecycle-on", ()), ("lifecycle-off",
                                                  ("--lifecycle-interval", "off"))):
            crl_out(ca, remove=True)  # as the fill left it: no CRL published yet
            free_lease(ca)
            tok = run("ca", "token", "--dir", ca, "svc").strip()
            s, r = startup(ca, certs, tok, *args)
            try:
                if mode == "lifecycle-on":
                    r["lifecycle_done_s"] = wait_lifecycle(s)
                    r["crl_out_after_lifecycle"] = crl_out(ca) is not None
                    r["lifecycle_log"] = [l.strip()[-300:] for _, l in s.lines
                                          if "lifecycle" in l][:4]
                    # phase 1: the CRL's path is remembered (the start-up run's CRL sets it;
                    # `ca crl --out` would): each revoke re-signs the CRL
                    crl_out(ca, set_to=ca / "crl.pem")
                    probe = RenewProbe(ca, certs, s)
                    row["revoke_crl_in_request"] = revokes(
                        ca, certs, s, order[used:used + REVOKES_CRL])
                    row["renew_during_crl_revokes"] = probe.result()
                    used += REVOKES_CRL
                    row["crl_after_revokes_crl"] = get_crl(s, ca, certs, 1)
                    # phase 2: no remembered path: the revocation alone
                    crl_out(ca, remove=True)
                    row["revoke_no_crl"] = revokes(ca, certs, s, order[used:used + REVOKES])
                    used += REVOKES
                    row["crl_after_revokes"] = get_crl(s, ca, certs)
                    row["crl_out_after_get"] = crl_out(ca) is not None
            finally:
                s.stop()
            row[f"start_{mode}"] = r
        row["revoked_rows"] = sqlite3.connect(ca / "meshtls.db").execute(
            "SELECT count(*) FROM certificates WHERE status = 'revoked'").fetchone()[0]
        print(json.dumps(row), flush=True)
        results["scale"].append(row)


# ---- issuance: SQLite against PostgreSQL -----------------------------------------------------

def load(pid, make_conn, one, seconds, threads):
    """cs.run_load's loop, but one() may raise StopIteration (out of tokens): that thread
    ends and the time counted is until the last request."""
    lat, lock, errors, end = [], threading.Lock(), [0], [0.0]
    stop_at = time.monotonic() + seconds

    def worker():
        conn, mine = make_conn(), []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                conn = one(conn)
            except StopIteration:
                break
            except Exception:
                errors[0] += 1
                conn = make_conn()
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
            end[0] = max(end[0], time.monotonic())

    c0, t0 = cs.cpu_seconds(pid), time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt, cpu, n = end[0] - t0, cs.cpu_seconds(pid) - c0, len(lat)
    return {"requests": n, "errors": errors[0], "rate": n / dt if dt > 0 else None,
            "cpu_us_per_req": cpu / n * 1e6 if n else None,
            "p50_ms": pct(lat, 0.5) * 1e3 if n else None,
            "p99_ms": pct(lat, 0.99) * 1e3 if n else None}


def issuance(backend, work, env=None, pg_url=None):
    ca, run = make_ca(work, env=env, pg_url=pg_url)
    certs = work / "certs"
    tokens = [run("ca", "token", "--dir", ca, "svc", "--ttl", "30m").strip()
              for _ in range(TOKENS)]
    s = Serve(ca, "--workers", "1", "--lifecycle-interval", "off", env=env)
    rows = []
    try:
        body = json.dumps({"csr": csr_for("svc")})
        mtls = tls_ctx(ca, certs, "svc")
        pub = tls_ctx(ca, certs, None)
        api = lambda: http.client.HTTPSConnection("localhost", s.port, timeout=30, context=mtls)
        anon = lambda: http.client.HTTPSConnection("localhost", s.port, timeout=30, context=pub)

        def post(path, keep, mk, b):
            def one(c):
                c.request("POST", path, body=b() if callable(b) else b,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
                if keep:
                    return c
                c.close()
                return mk()
            return one

        tl, csr = threading.Lock(), csr_for("svc")

        def tok_body():
            with tl:
                if not tokens:
                    raise StopIteration
                return json.dumps({"token": tokens.pop(), "csr": csr})

        for name, mk, one in (
                ("renew-ka", api, post("/api/v1/renew", True, api, body)),
                ("renew-conn", api, post("/api/v1/renew", False, api, body)),
                ("sign", anon, post("/api/v1/sign", True, anon, tok_body))):
            r = load(s.proc.pid, mk, one, cs.SECONDS, cs.THREADS)
            r.update(backend=backend, workload=name)
            print(json.dumps(r), flush=True)
            rows.append(r)
    finally:
        s.stop()
    return rows


def part_pg(work, results):
    pg, env = start_pg(results)
    if not pg:
        return
    try:
        for rnd in range(ROUNDS):
            for backend in ("sqlite", "postgres") if rnd % 2 == 0 else ("postgres", "sqlite"):
                d = work / f"iss-{backend}-{rnd}"
                d.mkdir()
                url = None
                if backend == "postgres":
                    db = f"ca{rnd}"
                    r = pg.sql(f"CREATE DATABASE {db} OWNER {pg.user}")
                    assert r.returncode == 0, r.stderr
                    url = f"postgres://{pg.user}@127.0.0.1:{pg.port}/{db}"
                for r in issuance(backend, d, env=env, pg_url=url):
                    r["round"] = rnd + 1
                    results["issuance"].append(r)
    finally:
        pg.stop()


def start_pg(results):
    """PasswordPostgres (tests/integration/servers.py) with fsync and synchronous commit on,
    and the environment a meshtls needs for it (the password in PGPASSWORD only)."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from servers import PasswordPostgres, pg_skip_reason  # noqa: E402  (conftest beside it)
    why = pg_skip_reason()
    if why:
        print(f"PostgreSQL parts skipped: {why}", file=sys.stderr)
        return None, None
    pg = PasswordPostgres()
    # the helper runs tests with fsync off; a benchmark of durable commits needs it on
    for q in ("ALTER SYSTEM SET fsync = on", "ALTER SYSTEM SET synchronous_commit = on",
              "SELECT pg_reload_conf()"):
        r = pg.sql(q)
        assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    results["pg_settings"] = pg.sql("SHOW fsync").stdout.strip().splitlines()[-3:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = pg.password
    return pg, env


def pg_run(url, env, sql=None, copy=None, rows=()):
    """psql on url: one statement, or \\copy TABLE (COLS) of rows as CSV (None: NULL)."""
    cmd = ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c",
           sql if sql else f"\\copy {copy} FROM STDIN WITH (FORMAT csv)"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if copy:
        w = csv.writer(p.stdin)
        for r in rows:
            w.writerow(r)
    p.stdin.close()
    out = p.stdout.read()
    if p.wait(timeout=900) != 0:
        raise SystemExit(f"psql failed: {sql or copy}")
    return out.strip()


def part_pgscale(work, results):
    """Start-up and revoke (without the CRL) on PostgreSQL, the store filled the same way
    (COPY through psql)."""
    pg, env = start_pg(results)
    if not pg:
        return
    try:
        r = pg.sql(f"CREATE DATABASE scale OWNER {pg.user}")
        assert r.returncode == 0, r.stderr
        url = f"postgres://{pg.user}@127.0.0.1:{pg.port}/scale"
        ca, run = make_ca(work, env=env, pg_url=url)
        certs = work / "certs"
        s = Serve(ca, "--lifecycle-interval", "off", env=env)  # the server's tables
        s.stop()
        t0 = time.monotonic()
        services, rows, revs = gen_rows(ca)
        pg_run(url, env, copy="services (name, spiffe_id, created_at, updated_at)",
               rows=services)
        pg_run(url, env, copy="certificates (serial, service, not_before, not_after, status, "
               "cert_pem, pubkey_pem, key_held, issued_at, revoked_at, reason)",
               rows=((a, b, c, d, e, f, g, 0, h, i, j) for a, b, c, d, e, f, g, h, i, j in rows))
        base = int(pg_run(url, env, "SELECT COALESCE(MAX(epoch), 0) FROM serve_revocations"))
        pg_run(url, env, copy="serve_revocations (epoch, serial, service, revoked_at, reason)",
               rows=epochs(revs, base))
        pg_run(url, env, "UPDATE serve_epoch SET value = (SELECT MAX(epoch) FROM "
               "serve_revocations) WHERE id = 1")
        pg_run(url, env, "ANALYZE services, certificates, serve_revocations")
        print(f"filled PostgreSQL in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        order = [f"s{i:05d}" for i in range(SERVICES)][::-1]  # other services than part scale
        out = {}
        for mode, args in (("lifecycle-on", ()), ("lifecycle-off",
                                                  ("--lifecycle-interval", "off"))):
            pg_run(url, env, "DELETE FROM meta WHERE key LIKE 'crl_out%'")
            pg_run(url, env, "UPDATE serve_leases SET holder = '', until_ms = 0 "
                   "WHERE name = 'lifecycle'")
            tok = run("ca", "token", "--dir", ca, "svc").strip()
            s, r = startup(ca, certs, tok, *args, env=env)
            try:
                if mode == "lifecycle-on":
                    r["lifecycle_done_s"] = wait_lifecycle(s)
                    r["lifecycle_log"] = [l.strip()[-300:] for _, l in s.lines
                                          if "lifecycle" in l][:4]
                    pg_run(url, env, "DELETE FROM meta WHERE key LIKE 'crl_out%'")
                    out["revoke_no_crl"] = revokes(ca, certs, s, order[:REVOKES])
            finally:
                s.stop()
            out[f"start_{mode}"] = r
        print(json.dumps(out), flush=True)
        results["pgscale"] = out
    finally:
        pg.stop()


# ---- report ---------------------------------------------------------------------------------

def med(v):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    top = max(abs(x) for x in v)
    f = lambda x: f"{x:,.{0 if top >= 100 else 1 if top >= 10 else 2}f}"
    m = statistics.median(v)
    return f"{f(m)} ({f(min(v))}–{f(max(v))})" if len(v) > 1 else f(m)


def markdown(res, when):
    L = [f"`bench/ca_scale.py`, {when}: {ROWS:,} certificate rows, {REVOKED:,} revoked, "
         f"{SERVICES} services; {len(res['scale'])} round(s) of the SQLite part, "
         f"{len({r['round'] for r in res['issuance']})} of issuance; median (min–max).", ""]
    sc = res["scale"]
    if sc:
        L += ["| start-up | listening s | first /healthz 200 s | first /sign 200 s "
              "| lifecycle run done s |", "| --- | --- | --- | --- | --- |"]
        for mode in ("lifecycle-on", "lifecycle-off"):
            g = lambda k: med([r[f"start_{mode}"].get(k) for r in sc])
            L.append(f"| {mode} | {g('listen_s')} | {g('healthz_s')} | {g('sign_s')} | "
                     f"{g('lifecycle_done_s')} |")
        L += ["", "| revoke | n per round | p50 ms | p99 ms | max ms | server CPU ms/revoke |",
              "| --- | --- | --- | --- | --- | --- |"]
        for k, label in (("revoke_crl_in_request", "CRL path remembered (re-signed in request)"),
                         ("revoke_no_crl", "no CRL path (revocation only)")):
            g = lambda f: med([r[k][f] for r in sc])
            L.append(f"| {label} | {sc[0][k]['n']} | {g('p50_ms')} | {g('p99_ms')} | "
                     f"{g('max_ms')} | {g('cpu_ms_per_req')} |")
        pr = [r["renew_during_crl_revokes"] for r in sc if "renew_during_crl_revokes" in r]
        if pr:
            L += ["", f"/renew meanwhile (one at a time): {sum(p['n'] for p in pr)} requests, "
                  f"{sum(p['failed'] for p in pr)} failed (statuses "
                  f"{sorted({x for p in pr for x in p['statuses']})}), failures answered after "
                  f"{med([p['failed_ms_median'] for p in pr])} ms (median)"]
        L += ["", "| GET /crl after | status | ms | bytes |", "| --- | --- | --- | --- |"]
        for k in ("crl_after_revokes_crl", "crl_after_revokes"):
            for i in range(len(sc[0][k])):
                L.append(f"| {k} #{i + 1} | {', '.join(str(r[k][i]['status']) for r in sc)} | "
                         f"{med([r[k][i]['ms'] for r in sc])} | "
                         f"{med([r[k][i]['bytes'] for r in sc])} |")
    if res.get("plans"):
        L += ["", "| statement (SQLite) | EXPLAIN QUERY PLAN | ms (Python sqlite3, warm) |",
              "| --- | --- | --- |"]
        L += [f"| {k} | {v['plan']} | {v['ms']:,.0f} |" for k, v in res["plans"].items()]
    ps = res.get("pgscale")
    if ps:
        g = lambda m, k: med([ps[f"start_{m}"].get(k)])
        L += ["", "PostgreSQL, the same store (one round):", "",
              "| start-up | listening s | first /healthz 200 s | first /sign 200 s "
              "| lifecycle run done s |", "| --- | --- | --- | --- | --- |"]
        L += [f"| {m} | {g(m, 'listen_s')} | {g(m, 'healthz_s')} | {g(m, 'sign_s')} | "
              f"{g(m, 'lifecycle_done_s')} |" for m in ("lifecycle-on", "lifecycle-off")]
        rv = ps["revoke_no_crl"]
        L += ["", f"Revoke without the CRL: n {rv['n']}, p50 {rv['p50_ms']:.1f} ms, p99 "
              f"{rv['p99_ms']:.1f} ms, max {rv['max_ms']:.1f} ms, server CPU "
              f"{rv['cpu_ms_per_req']:.1f} ms/revoke"]
    iss = res["issuance"]
    if iss:
        L += ["", f"Issuance, {cs.SECONDS:g} s per row, {cs.THREADS} client threads "
              f"(PostgreSQL: fsync on, synchronous_commit on):", "",
              "| backend | workload | rate/s | meshtls CPU µs/req | p50 ms | p99 ms | errors |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
        for w in ("renew-ka", "renew-conn", "sign"):
            for b in ("sqlite", "postgres"):
                rs = [r for r in iss if r["backend"] == b and r["workload"] == w]
                if rs:
                    L.append(f"| {b} | {w} | {med([r['rate'] for r in rs])} | "
                             f"{med([r['cpu_us_per_req'] for r in rs])} | "
                             f"{med([r['p50_ms'] for r in rs])} | "
                             f"{med([r['p99_ms'] for r in rs])} | "
                             f"{sum(r['errors'] for r in rs)} |")
    return "\n".join(L) + "\n"


def main():
    work = Path(tempfile.mkdtemp(prefix="meshtls-cascale-"))
    os.chmod(work, 0o755)
    res = {"scale": [], "issuance": []}
    try:
        if "scale" in PARTS:
            (work / "scale").mkdir()
            part_scale(work / "scale", res)
        if "pg" in PARTS:
            (work / "pg").mkdir()
            part_pg(work / "pg", res)
        if "pgscale" in PARTS:
            (work / "pgscale").mkdir()
            part_pgscale(work / "pgscale", res)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = Path(os.environ.get("BENCH_OUT", ROOT / "bench" / "ca-scale-results-latest"))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res, when)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
