"""Benchmark of `meshtls ca serve` (issue 10 section 5), side by side in one run with
Debian's `cfssl serve` (golang-cfssl) signing the same CSR with the same CA key and
certificate, and `openssl ocsp -index ... -port` answering OCSP for the same certificate
with the same intermediate.  For each row: what one request costs the server, in CPU (its
own utime+stime from /proc/PID/stat, all threads, divided by the requests done) and in
latency seen by the client (p50/p99):

  meshtls ocsp-cached      POST /ocsp, the same nonce-less request, keep-alive (status port):
                           answered from the cache on the event loop
  meshtls ocsp-fresh       POST /ocsp with a new nonce each time, keep-alive: a store
                           look-up and an ECDSA signature
  meshtls ocsp-fresh-conn  the same, a new connection per request (as openssl ocsp serves)
  openssl ocsp-fresh-conn  `openssl ocsp -port`, the same requests (it signs every answer and
                           closes the connection after each)
  meshtls renew-ka         POST /api/v1/renew over one kept-alive mTLS connection per thread
  cfssl   sign-ka          POST /api/v1/cfssl/sign (cfssl serve -mutual-tls-ca), same CSR,
                           same keep-alive mTLS client
  meshtls renew-conn       /api/v1/renew with a full mTLS handshake per request
  cfssl   sign-conn        /api/v1/cfssl/sign with a full mTLS handshake per request
  cfssl+db sign-ka         sign-ka with cfssl's certificate database (-db-config, SQLite):
                           cfssl then records every certificate, as meshtls does
  meshtls sign             POST /api/v1/sign with a fresh one-time token each, keep-alive

Differences that stay: meshtls checks the CSR against the service's registration, records
every certificate (SQLite, synchronous commit) and audits it; cfssl 1.2 (Debian) signs what
the CSR asks, records it only in the cfssl+db row, and drops the SPIFFE URI SAN;
openssl ocsp reads a text index and keeps nothing in a cache.  The ratios printed at the end
are meshtls / other for the request rate and other / meshtls for CPU per request (> 1:
meshtls better on both).

The client is Python (a few threads), so rates here are the client's as much as the servers';
the CPU per request is each server's alone and is what to compare.  Loopback only, except
that `openssl ocsp -port` listens on every address (it has no address option) for the few
seconds of its rows; every server started is stopped by its PID.

  BENCH_SECONDS  seconds per measurement (default 3)
  BENCH_THREADS  client threads (default 4)
  BENCH_TOKENS   one-time tokens made for the sign row (default 300); the row ends when
                 they are used up (its rate is over the time they lasted)
  BENCH_OTHERS   0: meshtls rows only (default 1: cfssl and openssl too, if installed)
  MESHTLS_BIN    the meshtls binary (default build/meshtls)
Writes bench/ca-serve-results-latest.json and .md.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
MESHTLS = os.environ.get("MESHTLS_BIN", str(ROOT / "build" / "meshtls"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
TD = "bench.local"
OTHERS = os.environ.get("BENCH_OTHERS", "1") != "0"


def mt(*args, **kw):
    return subprocess.run([MESHTLS, *map(str, args)], check=True, capture_output=True, text=True,
                          timeout=60, **kw).stdout


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


# cfssl's certificate database, SQLite (certdb/sqlite/migrations of cfssl): what
# `cfssl serve -db-config` writes each signed certificate into
CFSSL_SCHEMA = """
CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp,
  pem blob NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run_load(server, name, pid, make_conn, one, n_threads=THREADS):
    lat, lock, stop = [], threading.Lock(), time.monotonic() + SECONDS
    errors = [0]

    def worker():
        conn = make_conn()
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn = one(conn)
            except StopIteration:  # nothing left to send (the sign row's tokens)
                break
            except Exception:  # count and go on with a new connection
                errors[0] += 1
                conn = make_conn()
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    c0, t0 = cpu_seconds(pid), time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt, cpu = time.monotonic() - t0, cpu_seconds(pid) - c0
    lat.sort()
    n = len(lat)
    row = {"server": server, "workload": name, "requests": n, "errors": errors[0], "rate": n / dt,
           "cpu_us_per_req": cpu / n * 1e6 if n else None,
           "per_core_rate": n / cpu if cpu else None,
           "p50_ms": lat[n // 2] * 1e3 if n else None,
           "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else None}
    print(json.dumps(row), flush=True)
    return row


def ocsp_index(ca, path):
    """openssl ocsp's index.txt for every certificate in the store (V or R)."""
    rows = json.loads(mt("ca", "list", "--dir", ca, "--json"))
    with open(path, "w") as f:
        for r in rows:
            end = time.strftime("%y%m%d%H%M%SZ", time.strptime(r["not_after"], "%Y-%m-%dT%H:%M:%SZ"))
            st, rev = ("R", end) if r["status"] == "revoked" else ("V", "")
            f.write(f"{st}\t{end}\t{rev}\t{r['serial'].upper()}\tunknown\t/CN={r['service']}\n")


def ratios(rows):
    """meshtls against the other server on matching rows: (label, rate ratio, CPU ratio)."""
    by = {(r["server"], r["workload"]): r for r in rows}
    pairs = [("ocsp fresh, new connection each", ("meshtls", "ocsp-fresh-conn"),
              ("openssl", "ocsp-fresh-conn")),
             ("ocsp cached vs openssl fresh", ("meshtls", "ocsp-cached"),
              ("openssl", "ocsp-fresh-conn")),
             ("issuance, keep-alive mTLS", ("meshtls", "renew-ka"), ("cfssl", "sign-ka")),
             ("issuance, keep-alive, both recording in SQLite", ("meshtls", "renew-ka"),
              ("cfssl+db", "sign-ka")),
             ("issuance, mTLS handshake each", ("meshtls", "renew-conn"), ("cfssl", "sign-conn"))]
    out = []
    for label, m, o in pairs:
        if m in by and o in by and by[m]["requests"] and by[o]["requests"]:
            out.append((label, o[0], by[m]["rate"] / by[o]["rate"],
                        by[o]["cpu_us_per_req"] / by[m]["cpu_us_per_req"]))
    return out


def markdown(rows, when):
    f = lambda v, d=0: "-" if v is None else f"{v:,.{d}f}"
    lines = [f"`bench/ca_serve.py`, {when}, {SECONDS:g} s per row, {THREADS} client threads.", "",
             "| server | workload | requests | errors | rate/s | CPU µs/req | per core/s | p50 ms "
             "| p99 ms |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['workload']} | {r['requests']} | {r['errors']} | "
                     f"{f(r['rate'])} | {f(r['cpu_us_per_req'])} | {f(r['per_core_rate'])} | "
                     f"{f(r['p50_ms'], 1)} | {f(r['p99_ms'], 1)} |")
    rs = ratios(rows)
    if rs:
        lines += ["", "| meshtls vs | other | rate ratio | CPU/request ratio (other / meshtls) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {l} | {o} | {a:.2f} | {c:.2f} |" for l, o, a, c in rs]
    return "\n".join(lines) + "\n"


def main():
    work = Path(tempfile.mkdtemp(prefix="meshtls-cabench-"))
    ca = work / "ca"
    mt("ca", "init", "--dir", ca, "--trust-domain", TD)
    mt("ca", "register", "--dir", ca, "svc")
    mt("ca", "issue", "--dir", ca, "svc", "--out", work / "certs")
    mt("ca", "register", "--dir", ca, "cfssl", "--dns", "localhost")
    mt("ca", "issue", "--dir", ca, "cfssl", "--out", work / "cfssl")
    proc = subprocess.Popen([MESHTLS, "ca", "serve", "--dir", str(ca), "--listen", "127.0.0.1:0",
                             "--status", "127.0.0.1:0", "--workers", "1",
                             "--lifecycle-interval", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    other = None
    rows = []
    try:
        port = sport = None
        while port is None or sport is None:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("ca serve did not start")
            if line.startswith("listening on "):
                port = int(line.rsplit(":", 1)[1])
            elif line.startswith("status on "):
                sport = int(line.rsplit(":", 1)[1])
        inter = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
        leaf = x509.load_pem_x509_certificate((work / "certs" / "svc.crt").read_bytes())

        def ocsp_req(nonce):
            b = ocsp.OCSPRequestBuilder().add_certificate(leaf, inter, hashes.SHA1())
            if nonce:
                b = b.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
            return b.build().public_bytes(serialization.Encoding.DER)

        cached = ocsp_req(False)

        def post_ocsp(body, conn, keep=True):
            def one(c):
                c.request("POST", "/ocsp" if keep else "/", body=body() if callable(body) else body,
                          headers={"Content-Type": "application/ocsp-request"})
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
                if keep:
                    return c
                c.close()
                return conn()
            return one

        plain = lambda: http.client.HTTPConnection("127.0.0.1", sport, timeout=10)
        fresh = lambda: ocsp_req(True)
        rows.append(run_load("meshtls", "ocsp-cached", proc.pid, plain, post_ocsp(cached, plain)))
        rows.append(run_load("meshtls", "ocsp-fresh", proc.pid, plain, post_ocsp(fresh, plain)))

        def post_ocsp_conn(conn):  # a new connection per request; meshtls needs the path
            def one(c):
                c.request("POST", "/ocsp", body=fresh(),
                          headers={"Content-Type": "application/ocsp-request",
                                   "Connection": "close"})
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
                c.close()
                return conn()
            return one

        rows.append(run_load("meshtls", "ocsp-fresh-conn", proc.pid, plain, post_ocsp_conn(plain)))
        if OTHERS and shutil.which("openssl"):
            ocsp_index(ca, work / "index.txt")
            oport = free_port()
            other = subprocess.Popen(
                ["openssl", "ocsp", "-index", str(work / "index.txt"), "-port", str(oport),
                 "-rsigner", str(ca / "intermediate.crt"), "-rkey", str(ca / "intermediate.key"),
                 "-CA", str(ca / "intermediate.crt"), "-nmin", "5"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                start_new_session=True)
            # not a probe connection: it serves one connection at a time and would wait on it
            if not other.stdout.readline().startswith("ACCEPT"):
                raise SystemExit("openssl ocsp did not start")
            oconn = lambda: http.client.HTTPConnection("127.0.0.1", oport, timeout=10)
            rows.append(run_load("openssl", "ocsp-fresh-conn", other.pid, oconn,
                                 post_ocsp(fresh, oconn, keep=False)))
            stop(other)
            other = None

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(f"spiffe://{TD}/svc/svc")]), False)
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        tls = ssl.create_default_context(cafile=str(ca / "ca.crt"))
        tls.load_cert_chain(str(work / "certs" / "svc.crt"), str(work / "certs" / "svc.key"))

        def post_json(path, body, conn, keep, want=200):
            def one(c):
                c.request("POST", path, body=body() if callable(body) else body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                assert r.status == want, r.status
                if keep:
                    return c
                c.close()
                return conn()
            return one

        api = lambda: http.client.HTTPSConnection("localhost", port, timeout=30, context=tls)
        body = json.dumps({"csr": csr})
        rows.append(run_load("meshtls", "renew-ka", proc.pid, api,
                             post_json("/api/v1/renew", body, api, True)))
        if OTHERS and shutil.which("cfssl"):
            (work / "cfssl.json").write_text(json.dumps({"signing": {"default": {
                "expiry": "2160h", "usages": ["signing", "digital signature",
                                              "key encipherment", "server auth",
                                              "client auth"]}}}))
            cport = free_port()
            other = subprocess.Popen(
                ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(cport),
                 "-ca", str(ca / "intermediate.crt"), "-ca-key", str(ca / "intermediate.key"),
                 "-config", str(work / "cfssl.json"),
                 "-tls-cert", str(work / "cfssl" / "cfssl.crt"),
                 "-tls-key", str(work / "cfssl" / "cfssl.key"),
                 "-mutual-tls-ca", str(ca / "ca.crt"), "-loglevel", "4"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_port(cport, other, "cfssl serve")
            cf = lambda: http.client.HTTPSConnection("localhost", cport, timeout=30, context=tls)
            cbody = json.dumps({"certificate_request": csr})
            rows.append(run_load("cfssl", "sign-ka", other.pid, cf,
                                 post_json("/api/v1/cfssl/sign", cbody, cf, True)))
            rows.append(run_load("cfssl", "sign-conn", other.pid, cf,
                                 post_json("/api/v1/cfssl/sign", cbody, cf, False)))
            stop(other)
            other = None
            # the same with cfssl's certificate database (SQLite, its own schema): it then
            # records every certificate it signs, as meshtls does
            db = work / "cfssl-certs.db"
            subprocess.run(["sqlite3", str(db), CFSSL_SCHEMA], check=True, timeout=30)
            (work / "cfssl-db.json").write_text(json.dumps({"driver": "sqlite3",
                                                            "data_source": str(db)}))
            other = subprocess.Popen(
                ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(cport),
                 "-ca", str(ca / "intermediate.crt"), "-ca-key", str(ca / "intermediate.key"),
                 "-config", str(work / "cfssl.json"),
                 "-tls-cert", str(work / "cfssl" / "cfssl.crt"),
                 "-tls-key", str(work / "cfssl" / "cfssl.key"),
                 "-mutual-tls-ca", str(ca / "ca.crt"), "-db-config", str(work / "cfssl-db.json"),
                 "-loglevel", "4"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_port(cport, other, "cfssl serve -db-config")
            rows.append(run_load("cfssl+db", "sign-ka", other.pid, cf,
                                 post_json("/api/v1/cfssl/sign", cbody, cf, True)))
            stop(other)
            other = None
        rows.append(run_load("meshtls", "renew-conn", proc.pid, api,
                             post_json("/api/v1/renew", body, api, False)))

        tokens = [mt("ca", "token", "--dir", ca, "svc", "--ttl", "10m").strip()
                  for _ in range(int(os.environ.get("BENCH_TOKENS", "300")))]
        tok_lock = threading.Lock()
        pub = ssl.create_default_context(cafile=str(ca / "ca.crt"))
        anon = lambda: http.client.HTTPSConnection("localhost", port, timeout=30, context=pub)

        def sign(c):
            with tok_lock:
                if not tokens:  # used up: this thread stops (not a request: not counted)
                    raise StopIteration
                t = tokens.pop()
            return post_json("/api/v1/sign", json.dumps({"token": t, "csr": csr}), anon, True)(c)

        rows.append(run_load("meshtls", "sign", proc.pid, anon, sign))
    finally:
        stop(other)
        stop(proc)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = ROOT / "bench" / "ca-serve-results-latest"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    md = markdown(rows, when)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written {out}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
