"""Side-by-side benchmark driver, called by bench/run.sh (which builds what it needs).

meshtls proxy server, HAProxy, nginx (stream) and stunnel, one worker/thread each, in front of
the same plaintext echo backend (bench/echo.c) with the same ECDSA P-256 leaf + intermediate
certificates, TLS 1.3 and a required client certificate.  Loopback only.  Every process it
starts runs in its own session and is stopped by that PID (SIGTERM, then SIGKILL) on the way
out, whatever happens; every measurement is bounded in time and count.

CPU is the server's own utime+stime (every process of its session, all threads; /proc/PID/stat)
read before and after each measurement and divided by the operations done: what a sidecar
costs, which does not depend on how busy this shared machine is at the moment the way rates do.
RSS per idle connection is the growth of the server's VmRSS (all its processes) with K open
mTLS connections, divided by K, on a fresh instance warmed up with 200 handshakes.

Every throughput/CPU figure is measured BENCH_REPS times in interleaved rounds (each round
starts every server afresh, in a rotated order) and the median is reported; min..max is kept in
bench/results-latest.json.

Environment:
  BENCH_SECONDS  seconds per timed measurement (default 4)
  BENCH_REPS     rounds (default 3)
  BENCH_IDLE     idle connection counts (default 1000,9000)
  BENCH_BULK_MIB MiB per bulk transfer, each direction (default 1024; capped by time)
  BENCH_SERVERS  comma list, default meshtls,meshtls-nocache,haproxy,nginx,stunnel
  BENCH_FLOOR    0 to skip the in-memory floor tool
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BENCH_BUILD", ROOT / "build-bench"))
MESHTLS = BUILD / "meshtls"
TOOLS = BUILD / "bench"
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
IDLE = [int(x) for x in os.environ.get("BENCH_IDLE", "1000,9000").split(",") if x]
BULK_MIB = int(os.environ.get("BENCH_BULK_MIB", "1024"))
ALL = ["meshtls", "meshtls-nocache", "haproxy", "nginx", "stunnel"]
SERVERS = [s for s in os.environ.get("BENCH_SERVERS", ",".join(ALL)).split(",") if s in ALL]
TICK = os.sysconf("SC_CLK_TCK")
STARTED = []  # Popen objects we started (each the leader of its own session)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------------


def start(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    STARTED.append(p)
    return p


def stop(p):
    """SIGTERM the session we started (by its leader's PID), then SIGKILL."""
    if p.poll() is None or session_pids(p.pid):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and session_pids(p.pid):
                p.poll()
                time.sleep(0.05)
            if not session_pids(p.pid):
                break
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all(*_):
    for p in list(STARTED):
        stop(p)


def session_pids(sid):
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(f[3]) == sid and f[0] != "Z":  # field 6: session id
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_seconds(sid):
    total = 0
    for pid in session_pids(sid):
        try:
            f = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime + stime: the process, all its threads
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def rss_kib(sid):
    total = 0
    for pid in session_pids(sid):
        try:
            m = re.search(r"VmRSS:\s+(\d+)", (Path("/proc") / str(pid) / "status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


# ---- PKI -------------------------------------------------------------------------------


def pki(d):
    """ECDSA P-256 root -> intermediate -> leaves; SERVICE.crt holds leaf + intermediate."""
    out = d / "pki"
    try:
        ca = d / "ca"
        for args in (["init", "--dir", ca, "--trust-domain", "bench.local", "--key-type", "ec-p256"],
                     ["register", "--dir", ca, "server", "--dns", "localhost", "--ip", "127.0.0.1"],
                     ["register", "--dir", ca, "client"],
                     ["issue", "--dir", ca, "server", "--out", out, "--days", "90"],
                     ["issue", "--dir", ca, "client", "--out", out, "--days", "90"]):
            subprocess.run([str(MESHTLS), "ca", *map(str, args)], check=True,
                           capture_output=True, timeout=60)
        how = "meshtls ca init/register/issue"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        log(f"   meshtls ca failed ({e}); making the same PKI with openssl")
        shutil.rmtree(out, ignore_errors=True)
        openssl_pki(d / "opki", out)
        how = "openssl (fallback)"
    (out / "server.pem").write_bytes((out / "server.crt").read_bytes() +
                                     (out / "server.key").read_bytes())
    os.chmod(out / "server.pem", 0o600)
    return out, how


def openssl_pki(w, out):
    w.mkdir(parents=True)
    out.mkdir(parents=True)

    def ossl(*a):
        subprocess.run(["openssl", *map(str, a)], check=True, capture_output=True, cwd=w,
                       timeout=60)

    def key(name):
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", f"{name}.key")
    (w / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                              "keyUsage=critical,keyCertSign,cRLSign\n")
    (w / "int.ext").write_text("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                               "keyUsage=critical,keyCertSign,cRLSign\n")
    key("root")
    ossl("req", "-new", "-x509", "-key", "root.key", "-subj", "/O=bench/CN=bench root",
         "-days", "30", "-out", "root.crt", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key("int")
    ossl("req", "-new", "-key", "int.key", "-subj", "/O=bench/CN=bench intermediate",
         "-out", "int.csr")
    ossl("x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey", "root.key",
         "-CAcreateserial", "-days", "30", "-extfile", "int.ext", "-out", "int.crt")
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1,URI:spiffe://bench.local/svc/server"),
                      ("client", "URI:spiffe://bench.local/svc/client")):
        key(name)
        (w / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n")
        ossl("req", "-new", "-key", f"{name}.key", "-subj", f"/O=bench/CN={name}",
             "-out", f"{name}.csr")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "int.crt", "-CAkey", "int.key",
             "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.leaf")
        (out / f"{name}.crt").write_bytes((w / f"{name}.leaf").read_bytes() +
                                          (w / "int.crt").read_bytes())
        shutil.copy(w / f"{name}.key", out / f"{name}.key")
        os.chmod(out / f"{name}.key", 0o600)
    shutil.copy(w / "root.crt", out / "ca.crt")


# ---- servers ---------------------------------------------------------------------------


def server_argv(name, d, p, port, echo_port):
    crt, key, ca = p / "server.crt", p / "server.key", p / "ca.crt"
    if name.startswith("meshtls"):
        argv = [str(MESHTLS), "proxy", "server", "--listen", f"127.0.0.1:{port}",
                "--target", f"127.0.0.1:{echo_port}", "--cert", str(crt), "--key", str(key),
                "--cacert", str(ca), "--allow-all", "--workers", "1", "--max-conns", "9500",
                "--log-level", "warn", "--no-watch"]
        if name == "meshtls-nocache":  # what the two handshake caches buy
            argv += ["--session-cache-size", "0", "--verify-cache-size", "0"]
        return argv
    if name == "haproxy":
        (d / "haproxy.cfg").write_text(f"""global
    nbthread 1
    maxconn 9500
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend fe
    bind 127.0.0.1:{port} ssl crt {p}/server.pem ca-file {ca} verify required ssl-min-ver TLSv1.3
    default_backend be
backend be
    server echo 127.0.0.1:{echo_port}
""")
        return ["haproxy", "-db", "-f", str(d / "haproxy.cfg")]
    if name == "nginx":
        (d / "nginx.conf").write_text(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.log warn;
events {{ worker_connections 19500; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_protocols TLSv1.3;
        proxy_pass 127.0.0.1:{echo_port};
        proxy_timeout 300s;
    }}
}}
""")
        return ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)]
    if name == "stunnel":
        (d / "stunnel.conf").write_text(f"""foreground = yes
pid =
debug = 3
[bench]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{echo_port}
cert = {crt}
key = {key}
CAfile = {ca}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
TIMEOUTidle = 300
""")
        return [shutil.which("stunnel4") or "stunnel", str(d / "stunnel.conf")]
    raise ValueError(name)


def loadgen(mode, port, p, *opts, timeout=400):
    r = subprocess.run([str(TOOLS / "loadgen"), mode, f"127.0.0.1:{port}", str(p / "client.crt"),
                        str(p / "client.key"), str(p / "ca.crt"), *map(str, opts)],
                       capture_output=True, text=True, timeout=timeout)
    kv = dict(x.split("=", 1) for x in r.stdout.split() if "=" in x)
    if r.returncode != 0 or not kv:
        raise RuntimeError(f"loadgen {mode}: status {r.returncode}: {r.stderr.strip()[-300:]}")
    return kv


def launch(name, d, p, echo_port):
    port = free_port()
    proc = start(server_argv(name, d, p, port, echo_port), stdout=subprocess.DEVNULL,
                 stderr=open(d / f"{name}.err", "a"))
    try:
        wait_port(port, proc)
    except RuntimeError:
        stop(proc)
        raise
    time.sleep(0.3)
    return proc, port


def measure_round(name, d, p, echo_port):
    """Timed measurements on one fresh instance: full, resume, rr, up, down."""
    out = {}
    proc, port = launch(name, d, p, echo_port)
    sid = proc.pid
    try:
        loadgen("full", port, p, "-t", 2, "-n", 100, "-d", 2)  # warm-up
        for mode in ("full", "resume"):
            c0 = cpu_seconds(sid)
            r = loadgen(mode, port, p, "-t", 4, "-d", SECONDS)
            ops = max(int(r["ops"]), 1)
            out[mode] = {"rate": float(r["rate"]), "cpu_us": (cpu_seconds(sid) - c0) / ops * 1e6,
                         "reused_share": int(r["reused"]) / ops, "fails": int(r["fails"]),
                         "tls": r.get("tls")}
        c0 = cpu_seconds(sid)
        r = loadgen("rr", port, p, "-c", 64, "-s", 1024, "-d", SECONDS)
        ops = max(int(r["ops"]), 1)
        out["rr"] = {"rate": float(r["rate"]), "p50": float(r["p50_us"]),
                     "p99": float(r["p99_us"]), "p999": float(r["p999_us"]),
                     "cpu_us": (cpu_seconds(sid) - c0) / ops * 1e6, "fails": int(r["fails"])}
        for mode in ("up", "down"):
            c0 = cpu_seconds(sid)
            r = loadgen(mode, port, p, "-m", BULK_MIB, "-d", max(SECONDS * 3, 10))
            byts = max(int(r["bytes"]), 1)
            out[mode] = {"mbps": float(r["mbps"]),
                         "cpu_s_per_gb": (cpu_seconds(sid) - c0) / (byts / 1e9),
                         "complete": int(r["complete"]), "fails": int(r["fails"])}
            time.sleep(0.2)
    finally:
        stop(proc)
    return out


def measure_idle(name, d, p, echo_port, k):
    proc, port = launch(name, d, p, echo_port)
    sid = proc.pid
    try:
        loadgen("full", port, p, "-t", 2, "-n", 200, "-d", 5)  # warm-up, the same for all
        time.sleep(0.5)
        before = rss_kib(sid)
        holder = start([str(TOOLS / "loadgen"), "idle", f"127.0.0.1:{port}", str(p / "client.crt"),
                        str(p / "client.key"), str(p / "ca.crt"), "-k", str(k), "-t", "2",
                        "-d", "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()  # the holder bounds itself (240 s opening, 300 s hold)
        opened = int(re.search(r"open=(\d+)", line).group(1)) if "open=" in line else 0
        time.sleep(1.5)
        after = rss_kib(sid)
        holder.stdin.close()
        try:
            holder.wait(60)
        except subprocess.TimeoutExpired:
            pass
        stop(holder)
        return {"open": opened, "before_kib": before, "after_kib": after,
                "kib_per_conn": (after - before) / opened if opened else None}
    finally:
        stop(proc)


# ---- report ----------------------------------------------------------------------------


def med(runs, *path):
    vals = []
    for r in runs:
        try:
            v = r
            for k in path:
                v = v[k]
            if v is not None:
                vals.append(float(v))
        except (KeyError, TypeError):
            pass
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def version(cmd, want=None):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        lines = [x.strip() for x in (r.stdout + r.stderr).splitlines() if x.strip()]
        return next((x for x in lines if not want or want in x), lines[0])
    except (OSError, IndexError, StopIteration, subprocess.TimeoutExpired):
        return "?"


# (label, path, format, higher is better, issue-5 goal as a max/min ratio vs HAProxy)
ROWS = [
    ("full mTLS handshakes/s (4 client conns at a time)", ("full", "rate"), "{:.0f}", True, None),
    ("server CPU µs per full mTLS connection", ("full", "cpu_us"), "{:.0f}", False, 0.55),
    ("resumed handshakes/s", ("resume", "rate"), "{:.0f}", True, None),
    ("server CPU µs per resumed connection", ("resume", "cpu_us"), "{:.0f}", False, 0.35),
    ("share of connections resumed", ("resume", "reused_share"), "{:.2f}", True, None),
    ("req/resp per s (64 conns, 1 KiB)", ("rr", "rate"), "{:.0f}", True, None),
    ("req/resp p50 µs", ("rr", "p50"), "{:.0f}", False, None),
    ("req/resp p99 µs", ("rr", "p99"), "{:.0f}", False, None),
    ("server CPU µs per request", ("rr", "cpu_us"), "{:.1f}", False, 0.8),
    ("bulk client→server MB/s", ("up", "mbps"), "{:.0f}", True, None),
    ("server CPU-s per GB, client→server", ("up", "cpu_s_per_gb"), "{:.2f}", False, 1.0),
    ("bulk server→client MB/s", ("down", "mbps"), "{:.0f}", True, None),
    ("server CPU-s per GB, server→client", ("down", "cpu_s_per_gb"), "{:.2f}", False, 1.0),
]


def report(rounds, idle, names, floor_text, meta):
    rows = list(ROWS) + [(f"RSS KiB per idle connection ({k:,})", ("idle", k, "kib_per_conn"),
                          "{:.1f}", False, 0.5) for k in IDLE]

    def value(name, path):
        if path[0] == "idle":
            v = idle.get(name, {}).get(path[1], {}).get("kib_per_conn")
            return (v, v, v) if v is not None else None
        return med(rounds.get(name, []), *path)

    head = "| measure | " + " | ".join(names) + " | meshtls / HAProxy | goal (issue 5) |"
    lines = [head, "|" + " --- |" + " ---: |" * (len(names) + 2)]
    ratio_lines = ["| measure | " + " | ".join(names) + " |", "|" + " --- |" + " ---: |" * len(names)]
    for label, path, fmt, higher, goal in rows:
        vals = {n: value(n, path) for n in names}
        cells = [fmt.format(vals[n][0]) if vals[n] else "–" for n in names]
        h = vals.get("haproxy")
        m = vals.get("meshtls")
        ratio, g = "–", "–"
        if m and h and h[0]:
            r = m[0] / h[0]
            ratio = f"{r:.2f}×"
            if goal is not None:
                g = f"≤ {goal:g}× " + ("met" if r <= goal else "**not met**")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} | {g} |")
        rc = [f"{vals[n][0] / h[0]:.2f}" if vals[n] and h and h[0] else "–" for n in names]
        ratio_lines.append(f"| {label} | " + " | ".join(rc) + " |")
    spread = ["| measure | " + " | ".join(names) + " |", "|" + " --- |" + " ---: |" * len(names)]
    for label, path, fmt, _h, _g in ROWS:
        cells = []
        for n in names:
            v = med(rounds.get(n, []), *path)
            cells.append(f"{fmt.format(v[1])}..{fmt.format(v[2])}" if v else "–")
        spread.append(f"| {label} | " + " | ".join(cells) + " |")
    text = ("### Side by side (medians of %d rounds)\n\n" % meta["reps"] + "\n".join(lines) +
            "\n\n### Ratios vs HAProxy (every server; for rates higher is better, for CPU, "
            "latency and RSS lower is better)\n\n" + "\n".join(ratio_lines) +
            "\n\n### Spread over the rounds (min..max)\n\n" + "\n".join(spread) + "\n\n" +
            meta["env"] + "\n")
    if floor_text:
        text += ("\n### In-memory floor (bench/floor: server-side CPU per handshake, BIO pair, "
                 "one core, no sockets; median (min..max) of runs)\n\n" + floor_text + "\n")
    return text


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (stop_all(), sys.exit(130)))
    d = Path(tempfile.mkdtemp(prefix="meshtls-bench-"))
    t0 = time.monotonic()
    try:
        p, how = pki(d)
        log(f"PKI: {how}; work dir {d}")
        echo = start([str(TOOLS / "echo")], stdout=subprocess.PIPE, text=True)
        echo_port = int(echo.stdout.readline().rsplit(":", 1)[1])
        rounds = {n: [] for n in SERVERS}
        tls = {}
        for rep in range(REPS):
            order = SERVERS[rep % len(SERVERS):] + SERVERS[:rep % len(SERVERS)]
            for name in order:
                log(f"== round {rep + 1}/{REPS}: {name}")
                try:
                    r = measure_round(name, d, p, echo_port)
                    rounds[name].append(r)
                    tls[name] = r["full"].get("tls")
                    log("   full %.0f/s %.0f µs, resumed %.0f/s %.0f µs, rr %.0f/s p50 %.0f µs "
                        "%.1f µs/req, up %.0f MB/s, down %.0f MB/s" % (
                            r["full"]["rate"], r["full"]["cpu_us"], r["resume"]["rate"],
                            r["resume"]["cpu_us"], r["rr"]["rate"], r["rr"]["p50"],
                            r["rr"]["cpu_us"], r["up"]["mbps"], r["down"]["mbps"]))
                except Exception as e:  # noqa: BLE001 - report it and go on with the others
                    err = (d / f"{name}.err")
                    log(f"   {name} failed: {e} {err.read_text()[-400:] if err.exists() else ''}")
        idle = {n: {} for n in SERVERS}
        for name in SERVERS:
            for k in IDLE:
                log(f"== idle: {name}, {k} connections")
                try:
                    idle[name][k] = measure_idle(name, d, p, echo_port, k)
                    log(f"   {idle[name][k]}")
                except Exception as e:  # noqa: BLE001
                    log(f"   {name} idle {k} failed: {e}")
        floor_text = ""
        if os.environ.get("BENCH_FLOOR", "1") != "0":
            log("== in-memory floor")
            r = subprocess.run([str(TOOLS / "floor"), str(p / "server.crt"), str(p / "server.key"),
                                str(p / "client.crt"), str(p / "client.key"), str(p / "ca.crt"),
                                "-n", "300", "-r", "5", "-w", "90"],
                               capture_output=True, text=True, timeout=150)
            floor_text = r.stdout.strip()
            # the proxy's default settings with mimalloc, then also with OpenSSL's built-in
            # EC key path: how `meshtls proxy` runs
            for extra in ([], ["-L", "1"]):
                r = subprocess.run([str(TOOLS / "floor-mimalloc"), str(p / "server.crt"),
                                    str(p / "server.key"), str(p / "client.crt"),
                                    str(p / "client.key"), str(p / "ca.crt"), "-n", "300",
                                    "-r", "5", "-w", "40", "-o", "proxy-default", *extra],
                                   capture_output=True, text=True, timeout=100)
                floor_text += "\n" + "\n".join(r.stdout.strip().splitlines()[2:])
        stop(echo)
        ulimit = subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout
        env = (f"Machine: {os.cpu_count()} cores (shared); each server with **1 worker/thread** "
               f"(meshtls `--workers 1`, HAProxy `nbthread 1`, nginx `worker_processes 1`; "
               f"stunnel has one thread per connection by design); TLS 1.3 "
               f"({'; '.join(f'{n}: {v}' for n, v in tls.items())}), "
               f"ECDSA P-256 leaf + intermediate ({how}), client certificate required and "
               f"verified; each server with its own defaults for session resumption. "
               f"{SECONDS:g} s per timed measurement, {REPS} rounds, bulk {BULK_MIB} MiB "
               f"each way (capped at {max(SECONDS * 3, 10):g} s); ulimit -n {ulimit.strip()}. "
               f"{version(['openssl', 'version'])}; {version(['haproxy', '-v'])}; "
               f"{version(['nginx', '-v'])}; "
               f"{version([shutil.which('stunnel4') or 'stunnel', '-version'], 'stunnel ')}; "
               f"{version(['uname', '-r'])}. Idle connections actually opened: " +
               ", ".join(f"{n} {'/'.join(str(idle[n].get(k, {}).get('open')) for k in IDLE)}"
                         for n in SERVERS) +
               f". Whole run: {time.monotonic() - t0:.0f} s.")
        meta = {"reps": REPS, "env": env}
        text = report(rounds, idle, SERVERS, floor_text, meta)
        print(text)
        (ROOT / "bench" / "results-latest.md").write_text(text)
        (ROOT / "bench" / "results-latest.json").write_text(json.dumps(
            {"rounds": rounds, "idle": {n: {str(k): v for k, v in idle[n].items()} for n in idle},
             "env": env, "floor": floor_text}, indent=1))
    finally:
        stop_all()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
