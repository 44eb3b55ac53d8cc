"""Side-by-side benchmark driver (see run.sh).  Loopback only; every process it
starts is stopped by PID; every measurement is bounded in time.

CPU is the server's own user+system time (all its processes and threads, read
from /proc before and after), divided by the operations done: it is what a
sidecar costs, independent of how fast this shared 2-core machine is at the
moment.  RSS per idle connection is the growth of the server's resident memory
with N open mTLS connections, divided by N."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
LOADGEN = BUILD / "bench" / "loadgen"
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
IDLE = [int(x) for x in os.environ.get("BENCH_IDLE", "1000,9000").split(",")]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def session_pids(sid):
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # field 6: session id
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_seconds(sid):
    total = 0
    for pid in session_pids(sid):
        try:
            f = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime + stime (whole process, all threads)
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


def pki(d):
    subprocess.run([str(BUILD / "meshtls"), "dev", "--out", str(d), "server", "client"],
                   check=True, capture_output=True)
    (d / "server.pem").write_bytes((d / "server.crt").read_bytes() + (d / "server.key").read_bytes())
    os.chmod(d / "server.pem", 0o600)


def configs(d, port, echo_port):
    crt, key, ca = d / "server.crt", d / "server.key", d / "ca.crt"
    (d / "haproxy.cfg").write_text(f"""
global
    nbthread 1
    maxconn 9800
    tune.ssl.default-dh-param 2048
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:{port} ssl crt {d}/server.pem ca-file {ca} verify required ssl-min-ver TLSv1.3
    default_backend be
backend be
    server echo 127.0.0.1:{echo_port}
""")
    (d / "nginx.conf").write_text(f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
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
    }}
}}
""")
    (d / "stunnel.conf").write_text(f"""
foreground = yes
pid =
[bench]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{echo_port}
cert = {crt}
key = {key}
CAfile = {ca}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
""")
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    meshtls = [str(BUILD / "meshtls"), "proxy", "server", "--listen", f"127.0.0.1:{port}",
               "--target", f"127.0.0.1:{echo_port}", "--cert", str(crt), "--key", str(key),
               "--cacert", str(ca), "--allow-all", "--workers", "1", "--max-conns", "19000",
               "--log-level", "warn"]
    return {
        "meshtls": meshtls,
        # the same with the session and verified-chain caches off: what the caches buy
        "meshtls-nocache": meshtls + ["--session-cache-size", "0", "--verify-cache-size", "0"],
        "haproxy": ["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
        "nginx": ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
        "stunnel": [stunnel, str(d / "stunnel.conf")],
    }


def loadgen(mode, port, d, *opts, timeout=300):
    r = subprocess.run([str(LOADGEN), mode, f"127.0.0.1:{port}", str(d / "client.crt"),
                        str(d / "client.key"), str(d / "ca.crt"), *map(str, opts)],
                       capture_output=True, text=True, timeout=timeout)
    return dict(kv.split("=", 1) for kv in r.stdout.split())


def measure(name, argv, port, d):
    out = {}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.err", "w"),
                            start_new_session=True)
    sid = proc.pid
    try:
        wait_port(port, proc)
        time.sleep(0.3)
        for mode in ("full", "resume"):
            c0 = cpu_seconds(sid)
            r = loadgen(mode, port, d, "-t", 4, "-d", SECONDS)
            ops = max(int(r.get("ops", 0)), 1)
            out[mode] = {"rate": float(r.get("rate", 0)),
                         "cpu_us": (cpu_seconds(sid) - c0) / ops * 1e6,
                         "reused": int(r.get("reused", 0)), "fails": int(r.get("fails", 0))}
        c0 = cpu_seconds(sid)
        r = loadgen("rr", port, d, "-c", 64, "-d", SECONDS)
        ops = max(int(r.get("ops", 0)), 1)
        out["rr"] = {"rate": float(r.get("rate", 0)), "p50": float(r.get("p50_us", 0)),
                     "p99": float(r.get("p99_us", 0)),
                     "cpu_us": (cpu_seconds(sid) - c0) / ops * 1e6}
        c0 = cpu_seconds(sid)
        r = loadgen("bulk", port, d, "-m", 256)
        byts = max(int(r.get("bytes", 0)), 1)
        # echoed: each byte crosses the proxy once in each direction
        out["bulk"] = {"mbps": float(r.get("mbps", 0)),
                       "cpu_s_per_gb": (cpu_seconds(sid) - c0) / (2 * byts / 1e9)}
        for n in IDLE:
            before = rss_kib(sid)
            holder = subprocess.Popen([str(LOADGEN), "idle", f"127.0.0.1:{port}",
                                       str(d / "client.crt"), str(d / "client.key"),
                                       str(d / "ca.crt"), "-n", str(n)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = holder.stdout.readline()
            opened = int(line.split("=")[1]) if line.startswith("open=") else 0
            time.sleep(1.0)
            after = rss_kib(sid)
            holder.stdin.close()
            holder.wait(60)
            out[f"idle{n}"] = {"open": opened,
                               "kib_per_conn": (after - before) / opened if opened else 0}
            time.sleep(1.0)
    finally:
        try:
            os.killpg(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(sid, signal.SIGKILL)
            proc.wait(10)
    return out


def version(cmd, want=None):
    """First line of `cmd`'s output (that mentions `want`, if given)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        lines = (r.stdout + r.stderr).strip().splitlines()
        return next((x for x in lines if not want or want in x), lines[0]).strip()
    except (OSError, IndexError, StopIteration):
        return "?"


def main():
    d = Path(tempfile.mkdtemp(prefix="meshtls-bench-"))
    echo = None
    try:
        pki(d)
        echo = subprocess.Popen([str(BUILD / "bench" / "echo")], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        echo_port = int(echo.stdout.readline().rsplit(":", 1)[1])
        results = {}
        for name in ("meshtls", "meshtls-nocache", "haproxy", "nginx", "stunnel"):
            port = free_port()
            argv = configs(d, port, echo_port)[name]
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                results[name] = measure(name, argv, port, d)
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                print(f"   {name} failed: {e}: {(d / (name + '.err')).read_text()[-500:]}",
                      file=sys.stderr)
        report(results)
    finally:
        if echo:
            os.killpg(echo.pid, signal.SIGTERM)
            echo.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def report(res):
    rows = [
        ("full mTLS handshakes/s (4 client threads)", lambda r: r["full"]["rate"], "{:.0f}", True),
        ("server CPU µs per full connection", lambda r: r["full"]["cpu_us"], "{:.0f}", False),
        ("resumed handshakes/s", lambda r: r["resume"]["rate"], "{:.0f}", True),
        ("server CPU µs per resumed connection", lambda r: r["resume"]["cpu_us"], "{:.0f}", False),
        ("share of connections resumed", lambda r: r["resume"]["reused"] /
         max(r["resume"]["rate"] * SECONDS, 1), "{:.2f}", True),
        ("req/resp per s (64 conns, 1 KiB)", lambda r: r["rr"]["rate"], "{:.0f}", True),
        ("req/resp p50 µs", lambda r: r["rr"]["p50"], "{:.0f}", False),
        ("req/resp p99 µs", lambda r: r["rr"]["p99"], "{:.0f}", False),
        ("server CPU µs per request", lambda r: r["rr"]["cpu_us"], "{:.1f}", False),
        ("bulk echo MB/s (256 MiB each way)", lambda r: r["bulk"]["mbps"], "{:.0f}", True),
        ("server CPU-s per GB relayed", lambda r: r["bulk"]["cpu_s_per_gb"], "{:.2f}", False),
    ] + [(f"RSS KiB per idle connection ({n})", (lambda n: lambda r: r[f"idle{n}"]["kib_per_conn"])(n),
          "{:.1f}", False) for n in IDLE]
    names = [n for n in ("meshtls", "meshtls-nocache", "haproxy", "nginx", "stunnel") if n in res]
    lines = ["| measure | " + " | ".join(names) + " | meshtls / HAProxy |",
             "| --- | " + " | ".join("---:" for _ in names) + " | ---: |"]
    for label, get, fmt, _higher in rows:
        vals = []
        for n in names:
            try:
                vals.append(get(res[n]))
            except (KeyError, ZeroDivisionError):
                vals.append(None)
        cells = [fmt.format(v) if v is not None else "–" for v in vals]
        m, h = vals[0] if "meshtls" in names else None, \
            vals[names.index("haproxy")] if "haproxy" in names else None
        ratio = f"{m / h:.2f}×" if m is not None and h else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    opened = {n: [res[n].get(f"idle{k}", {}).get("open") for k in IDLE] for n in names}
    env = (f"Machine: {os.cpu_count()} cores; each server with 1 worker/thread; TLS 1.3, ECDSA "
           f"P-256 leaf + intermediate, client certificate required; {SECONDS:g} s per "
           f"measurement. {version(['openssl', 'version'])}; {version(['haproxy', '-v'])}; "
           f"{version(['nginx', '-v'])}; "
           f"{version([shutil.which('stunnel4') or 'stunnel', '-version'], 'stunnel ')}. "
           f"Idle connections actually opened: {opened}.")
    text = "\n".join(lines) + "\n\n" + env + "\n"
    print(text)
    (ROOT / "bench" / "results-latest.md").write_text(text)


if __name__ == "__main__":
    main()
