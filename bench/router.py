"""The router against the proxy server, side by side (issue 11 section 7; docs/PERFORMANCE.md
"Router").

    bench/router.sh                      (builds what it needs, then runs this)
    /usr/bin/python3 bench/router.py     (after bench/run.sh or bench/router.sh built build-bench/)

`meshtls proxy server` and `meshtls proxy router`, one worker each, on the same certificates
(the server's leaf + intermediate; one client certificate, a user SVID
spiffe://bench.local/orgs/org0/users/alice, which the proxy server accepts with --allow-all),
in front of the same bench/echo backend, in the same run.  The router's store is SQLite, set
up with `meshtls router` commands (the benchmark's hosts, team, membership, grant) and filled
with plain SQL (docs/ROUTER.md) to issue 11's size: 100 organisations, 10,000 users, 1,000
teams, 10,000 hosts with 100,000 grants.  The router's limits are set to their maximum (the
bookkeeping runs, nothing is refused); the connection log is on (the default).

Servers (BENCH_ROUTER_SERVERS, default the first three): `proxy` (meshtls proxy server
--allow-all), `router` (its defaults: decisions cached 500 ms), `router-nocache` (--cache-ttl
0: every decision a query on a job thread), `router-nolog` and `router-nolog-nocache` (the
same with --no-connection-log: what the connection log costs), `proxy-noverifycache` (the
proxy server with --verify-cache-size 0, as the router verifies every full handshake).

Per round (each server started afresh, rotated order), for each server: full mTLS
connections (router: + connect-id line and OK), resumed ones, bulk each way; for the routers
also refusals (`ERROR: forbidden`, no backend connect).  Server CPU is utime+stime of the
server (all threads, /proc/PID/stat) before/after, divided by the operations; ratios
router/proxy are taken within a round, then the median and min..max over the rounds.
Line-to-verdict: loadgen's time from writing the line to having the answer (client side),
with one client on resumed connections (nothing to queue behind) and under the 4-client
load, and the router's own `decision_us` from its connection log (line complete ->
verdict).  Idle: RSS growth with K relays open (each with an 8-byte echo so the backend
leg exists) / K, and the server's CPU while they sit idle.

Environment: BENCH_SECONDS (per timed measurement, default 4), BENCH_REPS (rounds, 3),
BENCH_IDLE (relay counts, default 1000,9900: 10,000 relays need 20,000+ descriptors in one
process and `ulimit -n` is 20,000 here), BENCH_IDLE_REPS (default BENCH_REPS),
BENCH_BULK_MIB (default 512), BENCH_ROUTER_FILL=0 (no filler rows).
Prints Markdown and writes bench/router-latest.md and .json.
"""
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import random
import resource
import shutil
import signal
import statistics
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as rp  # noqa: E402  (bench/run.py: process handling, CPU/RSS readers, medians)

SECONDS = rp.SECONDS
REPS = rp.REPS
IDLE = [int(x) for x in os.environ.get("BENCH_IDLE", "1000,9900").split(",") if x]
IDLE_REPS = int(os.environ.get("BENCH_IDLE_REPS", str(REPS)))
BULK_MIB = int(os.environ.get("BENCH_BULK_MIB", "512"))
FILL = os.environ.get("BENCH_ROUTER_FILL", "1") != "0"
TD = "bench.local"
ORG, USER = "org0", "alice"
ALLOWED, FORBIDDEN = "echo-01", "closed-01"  # granted to alice through team ops / not at all
ALL = ["proxy", "router", "router-nocache", "router-nolog", "router-nolog-nocache",
       "proxy-noverifycache"]
SERVERS = [s for s in os.environ.get("BENCH_ROUTER_SERVERS", ",".join(ALL[:3])).split(",")
           if s in ALL]
MAX = "10000000"  # the limits' maximum: counted, never reached
MAX_CONNS = "9950"  # 2 descriptors a relay under ulimit -n 20,000


def mt(*args, timeout=60):
    return subprocess.run([str(rp.MESHTLS), *map(str, args)], check=True, capture_output=True,
                          text=True, timeout=timeout)


def pki(d):
    """ECDSA P-256 root -> intermediate -> server leaf and one user SVID, by meshtls ca."""
    ca, out = d / "ca", d / "pki"
    mt("ca", "init", "--dir", ca, "--trust-domain", TD, "--key-type", "ec-p256")
    mt("ca", "register", "--dir", ca, "server", "--dns", "localhost", "--ip", "127.0.0.1")
    mt("ca", "register", "--dir", ca, "client", "--spiffe-id",
       f"spiffe://{TD}/orgs/{ORG}/users/{USER}")
    for name in ("server", "client"):
        mt("ca", "issue", "--dir", ca, name, "--out", out, "--days", "90")
    return out


def store(d, echo_port):
    """The SQLite store: the benchmark's rows by `meshtls router`, the rest by plain SQL."""
    db = d / "router.db"
    s = f"sqlite:{db}"
    for args in (["users", "add", USER, "--org", ORG],
                 ["teams", "add", "ops", "--org", ORG],
                 ["members", "add", "ops", USER],
                 ["hosts", "add", ALLOWED, "--org", ORG, "--addr", f"127.0.0.1:{echo_port}"],
                 ["grant", ALLOWED, "--team", "ops"],
                 ["hosts", "add", FORBIDDEN, "--org", ORG, "--addr", f"127.0.0.1:{echo_port}"]):
        mt("router", "--store", s, *args)
    if FILL:
        fill(db)
    r = mt("router", "--store", s, "check", ALLOWED, "--org", ORG, "--user", USER)
    if not r.stdout.startswith("OK"):
        raise RuntimeError(f"the store does not allow {USER} on {ALLOWED}: {r.stdout}")
    return s, db


def setup(d):
    """PKI, a running bench/echo, the store: (pki dir, echo Popen, echo port, URL, db path)."""
    p = pki(d)
    echo = rp.start([str(rp.TOOLS / "echo")], stdout=subprocess.PIPE, text=True)
    echo_port = int(echo.stdout.readline().rsplit(":", 1)[1])
    s, db = store(d, echo_port)
    return p, echo, echo_port, s, db


def fill(db):
    """Issue 11's size, the shape of bench/routerbench.c: 100 organisations x (100 users,
    10 teams of 10 members, 100 hosts with 5 users + 5 teams each) = 100,000 grants."""
    rnd = random.Random(7)
    j = json.dumps
    users, teams, hosts = [], [], []
    for o in range(100):
        org = f"org{o}"
        uids = [f"u{o * 100 + u}" for u in range(100)]
        users += [(u, org) for u in uids]
        tids = [f"t{o * 10 + t}" for t in range(10)]
        teams += [(t, org, j(rnd.sample(uids, 10))) for t in tids]
        hosts += [(f"h{o * 100 + h}", "127.0.0.1:9", org, j(rnd.sample(uids, 5)),
                   j(rnd.sample(tids, 5))) for h in range(100)]
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO users (user_id, org_id) VALUES (?, ?)", users)
        con.executemany("INSERT INTO teams (team_id, org_id, user_ids) VALUES (?, ?, ?)", teams)
        con.executemany("INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, "
                        "user_ids, team_ids) VALUES (?, ?, ?, ?, ?)", hosts)
    con.close()


def argv(name, d, p, port, echo_port, s):
    if name.startswith("proxy"):
        a = rp.server_argv("meshtls", d, p, port, echo_port)
        a[a.index("--max-conns") + 1] = MAX_CONNS
        return a + (["--verify-cache-size", "0"] if "noverify" in name else [])
    a = [str(rp.MESHTLS), "proxy", "router", "--listen", f"127.0.0.1:{port}",
         "--cert", str(p / "server.crt"), "--key", str(p / "server.key"),
         "--cacert", str(p / "ca.crt"), "--issuer", TD, "--store", s, "--workers", "1",
         "--max-conns", MAX_CONNS, "--log-level", "warn", "--user-rate", MAX, "--org-rate", MAX,
         "--user-sessions", MAX, "--org-sessions", MAX]
    if "nocache" in name:
        a += ["--cache-ttl", "0"]
    if "nolog" in name:
        a += ["--no-connection-log"]
    return a


def launch(name, d, p, echo_port, s):
    port = rp.free_port()
    proc = rp.start(argv(name, d, p, port, echo_port, s), stdout=subprocess.DEVNULL,
                    stderr=open(d / f"{name}.err", "a"))
    try:
        rp.wait_port(port, proc)
    except RuntimeError:
        rp.stop(proc)
        raise
    time.sleep(0.3)
    return proc, port


def line_opts(name, cid=ALLOWED):
    return [] if name.startswith("proxy") else ["-L", cid]


def connlog(db, after, n_max=200000):
    """decision_us of the router's connection-log rows after rowid `after`, by result."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT result, decision_us FROM router_connections WHERE rowid > ? "
                           "ORDER BY rowid LIMIT ?", (after, n_max)).fetchall()
    finally:
        con.close()
    out = {}
    for res, us in rows:
        if us is not None:
            out.setdefault(res, []).append(us)
    return out


def last_rowid(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COALESCE(MAX(rowid), 0) FROM router_connections").fetchone()[0]
    finally:
        con.close()


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))] if v else None


def measure_round(name, d, p, echo_port, s, db):
    out = {}
    mark = last_rowid(db)
    proc, port = launch(name, d, p, echo_port, s)
    sid = proc.pid
    lo = line_opts(name)
    try:
        rp.loadgen("full", port, p, "-t", 2, "-n", 100, "-d", 2, *lo)  # warm-up
        for mode in ("full", "resume"):
            c0 = rp.cpu_seconds(sid)
            r = rp.loadgen(mode, port, p, "-t", 4, "-d", SECONDS, *lo)
            ops = max(int(r["ops"]), 1)
            out[mode] = {"rate": float(r["rate"]), "ops": ops,
                         "cpu_us": (rp.cpu_seconds(sid) - c0) / ops * 1e6,
                         "reused_share": int(r["reused"]) / ops, "fails": int(r["fails"]),
                         "line_p50": float(r.get("line_p50_us", "nan")),
                         "line_p99": float(r.get("line_p99_us", "nan"))}
        if not name.startswith("proxy"):
            c0 = rp.cpu_seconds(sid)
            r = rp.loadgen("full", port, p, "-t", 4, "-d", SECONDS / 2, "-L", FORBIDDEN,
                           "-A", "ERROR: forbidden")
            ops = max(int(r["ops"]), 1)
            out["refuse"] = {"rate": float(r["rate"]), "ops": ops,
                             "cpu_us": (rp.cpu_seconds(sid) - c0) / ops * 1e6,
                             "fails": int(r["fails"]), "line_p50": float(r["line_p50_us"]),
                             "line_p99": float(r["line_p99_us"])}
            # line to verdict without queueing: one client, resumed handshakes (cheap), so
            # the event loop is idle when the line arrives
            for key, extra in (("lat_ok", ["-L", ALLOWED]),
                               ("lat_refuse", ["-L", FORBIDDEN, "-A", "ERROR: forbidden"])):
                r = rp.loadgen("resume", port, p, "-t", 1, "-d", SECONDS / 2, *extra)
                out[key] = {"n": int(r["line_n"]), "fails": int(r["fails"]),
                            "line_p50": float(r["line_p50_us"]),
                            "line_p99": float(r["line_p99_us"])}
        for mode in ("up", "down"):
            c0 = rp.cpu_seconds(sid)
            r = rp.loadgen(mode, port, p, "-m", BULK_MIB, "-d", max(SECONDS * 3, 10), *lo)
            byts = max(int(r["bytes"]), 1)
            out[mode] = {"mbps": float(r["mbps"]),
                         "cpu_s_per_gb": (rp.cpu_seconds(sid) - c0) / (byts / 1e9),
                         "complete": int(r["complete"]), "fails": int(r["fails"])}
            time.sleep(0.2)
    finally:
        rp.stop(proc)  # SIGTERM: the connection log's last batch is written on the way out
    if not name.startswith("proxy"):
        log = connlog(db, mark)
        for res, v in log.items():
            out[f"decision_{res}"] = {"n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99)}
    return out


def measure_idle(name, d, p, echo_port, s, k):
    proc, port = launch(name, d, p, echo_port, s)
    sid = proc.pid
    lo = line_opts(name)
    try:
        rp.loadgen("full", port, p, "-t", 2, "-n", 200, "-d", 5, *lo)  # warm-up, the same
        time.sleep(0.5)
        before = rp.rss_kib(sid)
        holder = rp.start([str(rp.TOOLS / "loadgen"), "idle", f"127.0.0.1:{port}",
                           str(p / "client.crt"), str(p / "client.key"), str(p / "ca.crt"),
                           "-k", str(k), "-t", "2", "-d", "300", *lo],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()  # the holder bounds itself (240 s opening, 300 s hold)
        opened = int(re.search(r"open=(\d+)", line).group(1)) if "open=" in line else 0
        time.sleep(1.0)
        c0, t0 = rp.cpu_seconds(sid), time.monotonic()
        time.sleep(3.0)  # idle: what the router's re-checks of live relays cost
        idle_cpu = (rp.cpu_seconds(sid) - c0) / (time.monotonic() - t0)
        after = rp.rss_kib(sid)
        holder.stdin.close()
        try:
            holder.wait(60)
        except subprocess.TimeoutExpired:
            pass
        rp.stop(holder)
        return {"open": opened, "before_kib": before, "after_kib": after,
                "kib_per_conn": (after - before) / opened if opened else None,
                "idle_cpu_ms_per_s": idle_cpu * 1e3}
    finally:
        rp.stop(proc)


# ---- report ----------------------------------------------------------------------------

def fmt3(t, f="{:.0f}"):
    """median (min..max) of a med() triple."""
    if not t:
        return "–"
    return f"{f.format(t[0])} ({f.format(t[1])}..{f.format(t[2])})"


def ratios(rounds, a, b, *path):
    """a/b within each round (rounds paired by index), then median, min, max."""
    v = []
    for ra, rb in zip(rounds.get(a, []), rounds.get(b, [])):
        try:
            x, y = ra, rb
            for k in path:
                x, y = x[k], y[k]
            if y:
                v.append(x / y)
        except (KeyError, TypeError):
            pass
    return (statistics.median(v), min(v), max(v)) if v else None


ROWS = [  # label, path, format, goal (router / proxy)
    ("connections/s (4 client conns at a time)", ("full", "rate"), "{:.0f}", None),
    ("server CPU µs per connection (full mTLS)", ("full", "cpu_us"), "{:.0f}", 1.2),
    ("resumed connections/s", ("resume", "rate"), "{:.0f}", None),
    ("server CPU µs per resumed connection", ("resume", "cpu_us"), "{:.0f}", None),
    ("share resumed", ("resume", "reused_share"), "{:.2f}", None),
    ("bulk client→server MB/s", ("up", "mbps"), "{:.0f}", None),
    ("server CPU-s per GB, client→server", ("up", "cpu_s_per_gb"), "{:.2f}", 1.1),
    ("bulk server→client MB/s", ("down", "mbps"), "{:.0f}", None),
    ("server CPU-s per GB, server→client", ("down", "cpu_s_per_gb"), "{:.2f}", 1.1),
    ("server CPU µs per refusal (forbidden, full mTLS)", ("refuse", "cpu_us"), "{:.0f}", None),
]


def report(rounds, idle, meta):
    names = SERVERS
    routers = [n for n in names if n != "proxy"]  # the ratio columns
    L = ["| measure (median (min..max) of %d rounds) | " % REPS + " | ".join(names) + " | " +
         " | ".join(f"{n} / proxy" for n in routers) + " | goal (router / proxy) |",
         "| --- |" + " ---: |" * (len(names) + len(routers) + 1)]
    for label, path, f, goal in ROWS:
        cells = [fmt3(rp.med(rounds[n], *path), f) for n in names]
        rs = [ratios(rounds, n, "proxy", *path) for n in routers]
        r1 = ratios(rounds, "router", "proxy", *path)
        g = "–"
        if goal and r1:
            g = f"≤ {goal:g}× " + ("met" if r1[0] <= goal else "**not met**")
        L.append(f"| {label} | " + " | ".join(cells) + " | " +
                 " | ".join(fmt3(r, "{:.2f}") for r in rs) + f" | {g} |")
    inames = [n for n in ("proxy", "router") if n in idle]
    I = ["| idle relays | " + " | ".join(inames) + " | router / proxy | goal |",
         "| --- |" + " ---: |" * (len(inames) + 1) + " --- |"]
    for k in IDLE:
        for label, key, f in (("RSS KiB per relay", "kib_per_conn", "{:.1f}"),
                              ("server CPU ms/s while idle", "idle_cpu_ms_per_s", "{:.1f}"),
                              ("relays open", "open", "{:.0f}")):
            cells = [fmt3(rp.med(idle[n][k], key), f) for n in inames]
            rr = ratios({n: idle[n][k] for n in inames}, "router", "proxy", key)
            g = "–"
            if key == "kib_per_conn" and "router" in idle:
                m = rp.med(idle["router"][k], key)
                g = f"≤ 64 KiB {'met' if m and m[0] <= 64 else '**not met**'}" if m else "–"
            I.append(f"| {label}, {k:,} | " + " | ".join(cells) +
                     f" | {fmt3(rr, '{:.2f}')} | {g} |")
    D = ["| line → verdict (µs; median (min..max) over the rounds) | p50 | p99 |",
         "| --- | ---: | ---: |"]
    for n in (x for x in routers if not x.startswith("proxy")):
        for label, path in ((f"{n}: client, line written → `OK` read (includes the backend "
                             "connect), 1 client", "lat_ok"),
                            (f"{n}: client, line written → `ERROR: forbidden` read, 1 client",
                             "lat_refuse"),
                            (f"{n}: the same → `OK`, 4 clients making full handshakes "
                             "(queueing behind them)", "full")):
            D.append(f"| {label} | {fmt3(rp.med(rounds[n], path, 'line_p50'), '{:.0f}')} | "
                     f"{fmt3(rp.med(rounds[n], path, 'line_p99'), '{:.0f}')} |")
        for res in (() if "nolog" in n else ("ok", "forbidden")):
            D.append(f"| {n}: the router's own `decision_us` (connection log), {res} | "
                     f"{fmt3(rp.med(rounds[n], f'decision_{res}', 'p50'), '{:.0f}')} | "
                     f"{fmt3(rp.med(rounds[n], f'decision_{res}', 'p99'), '{:.0f}')} |")
    return ("### Router and proxy server side by side\n\n" + "\n".join(L) +
            ("\n\n### Idle relays\n\n" + "\n".join(I) if IDLE and inames else "") +
            "\n\n### Line to verdict through the engine\n\n" + "\n".join(D) + "\n\n" +
            meta + "\n")


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (rp.stop_all(), sys.exit(130)))
    # 9,900 idle relays need ~19,800 descriptors in the router (client + host side); the
    # servers and loadgen inherit the limit
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else 65536, hard))
    d = Path(tempfile.mkdtemp(prefix="meshtls-routerbench-"))
    t0 = time.monotonic()
    try:
        p, echo, echo_port, s, db = setup(d)
        rp.log(f"PKI and store ready in {time.monotonic() - t0:.0f} s; work dir {d}")
        rounds = {n: [] for n in SERVERS}
        for rep in range(REPS):
            order = SERVERS[rep % len(SERVERS):] + SERVERS[:rep % len(SERVERS)]
            for name in order:
                rp.log(f"== round {rep + 1}/{REPS}: {name}")
                try:
                    r = measure_round(name, d, p, echo_port, s, db)
                    rounds[name].append(r)
                    rp.log("   " + json.dumps(r))
                except Exception as e:  # noqa: BLE001 - report it, go on with the others
                    err = d / f"{name}.err"
                    rp.log(f"   {name} failed: {e} "
                           f"{err.read_text()[-400:] if err.exists() else ''}")
                    rounds[name].append({})  # keeps the rounds paired for the ratios
        inames = [n for n in ("proxy", "router") if n in SERVERS]
        idle = {n: {k: [] for k in IDLE} for n in inames}
        for rep in range(IDLE_REPS):
            for k in IDLE:
                for name in (inames if rep % 2 == 0 else inames[::-1]):
                    rp.log(f"== idle {rep + 1}/{IDLE_REPS}: {name}, {k} relays")
                    try:
                        r = measure_idle(name, d, p, echo_port, s, k)
                    except Exception as e:  # noqa: BLE001
                        rp.log(f"   failed: {e}")
                        r = {}
                    idle[name][k].append(r)
                    rp.log(f"   {r}")
        rp.stop(echo)
        ulimit = subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True,
                                text=True).stdout.strip()
        commit = subprocess.run(["git", "-C", str(rp.ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        meta = (f"Commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                f"{os.cpu_count()} cores (shared); {SECONDS:g} s per timed measurement, "
                f"{REPS} rounds ({IDLE_REPS if IDLE else 'no'} for idle), "
                f"bulk {BULK_MIB} MiB each way; "
                "store " + ("filled to 100 orgs / 10,000 users / 1,000 teams / 100,000 "
                            "grants" if FILL else "with the benchmark's rows only") + "; "
                f"ulimit -n {ulimit}; {rp.version(['openssl', 'version'])}. "
                f"Whole run: {time.monotonic() - t0:.0f} s.")
        text = report(rounds, idle, meta)
        print(text)
        (rp.ROOT / "bench" / "router-latest.md").write_text(text)
        (rp.ROOT / "bench" / "router-latest.json").write_text(json.dumps(
            {"rounds": rounds, "idle": {n: {str(k): v for k, v in idle[n].items()} for n in idle},
             "meta": meta}, indent=1))
    finally:
        rp.stop_all()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
