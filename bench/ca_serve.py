"""Benchmark of `meshtls ca serve` (issue 10 section 5), first cut: what one request costs the
server, in CPU (its own utime+stime from /proc/PID/stat, all threads, divided by the requests
done) and in latency seen by the client (p50/p99), for

  ocsp-cached   POST /ocsp, the same nonce-less request over keep-alive (plain HTTP, status
                port): answered from the cache on the event loop
  ocsp-fresh    POST /ocsp with a new nonce each time: a store look-up and an ECDSA signature
  renew-ka      POST /api/v1/renew over one kept-alive mTLS connection: a certificate issued
  renew-conn    POST /api/v1/renew with a full mTLS handshake per request
  sign          POST /api/v1/sign with a fresh one-time token each (tokens made beforehand)

The client is Python (a few threads), so rates here are the client's as much as the server's;
the CPU per request is the server's alone and is what to compare.  Loopback only; the server
it starts is stopped by its PID.

  BENCH_SECONDS  seconds per measurement (default 3)
  BENCH_THREADS  client threads (default 4)
  MESHTLS_BIN    the meshtls binary (default build/meshtls)
"""
import http.client
import json
import os
import signal
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


def mt(*args, **kw):
    return subprocess.run([MESHTLS, *map(str, args)], check=True, capture_output=True, text=True,
                          timeout=60, **kw).stdout


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run_load(name, pid, make_conn, one, n_threads=THREADS):
    lat, lock, stop = [], threading.Lock(), time.monotonic() + SECONDS
    errors = [0]

    def worker():
        conn = make_conn()
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn = one(conn)
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
    row = {"workload": name, "requests": n, "errors": errors[0], "rate": n / dt,
           "cpu_us_per_req": cpu / n * 1e6 if n else None,
           "per_core_rate": n / cpu if cpu else None,
           "p50_ms": lat[n // 2] * 1e3 if n else None,
           "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else None}
    print(json.dumps(row), flush=True)
    return row


def main():
    work = Path(tempfile.mkdtemp(prefix="meshtls-cabench-"))
    ca = work / "ca"
    mt("ca", "init", "--dir", ca, "--trust-domain", TD)
    mt("ca", "register", "--dir", ca, "svc")
    mt("ca", "issue", "--dir", ca, "svc", "--out", work / "certs")
    proc = subprocess.Popen([MESHTLS, "ca", "serve", "--dir", str(ca), "--listen", "127.0.0.1:0",
                             "--status", "127.0.0.1:0", "--workers", "1",
                             "--lifecycle-interval", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
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
        plain = lambda: http.client.HTTPConnection("127.0.0.1", sport, timeout=10)

        def post_ocsp(body):
            def one(c):
                c.request("POST", "/ocsp", body=body() if callable(body) else body,
                          headers={"Content-Type": "application/ocsp-request"})
                r = c.getresponse()
                r.read()
                assert r.status == 200
                return c
            return one

        rows.append(run_load("ocsp-cached", proc.pid, plain, post_ocsp(cached)))
        rows.append(run_load("ocsp-fresh", proc.pid, plain, post_ocsp(lambda: ocsp_req(True))))

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(f"spiffe://{TD}/svc/svc")]), False)
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        tls = ssl.create_default_context(cafile=str(ca / "ca.crt"))
        tls.load_cert_chain(str(work / "certs" / "svc.crt"), str(work / "certs" / "svc.key"))
        api = lambda: http.client.HTTPSConnection("localhost", port, timeout=30, context=tls)
        body = json.dumps({"csr": csr})

        def renew(keep):
            def one(c):
                c.request("POST", "/api/v1/renew", body=body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
                if keep:
                    return c
                c.close()
                return api()
            return one

        rows.append(run_load("renew-ka", proc.pid, api, renew(True)))
        rows.append(run_load("renew-conn", proc.pid, api, renew(False)))

        tokens = [mt("ca", "token", "--dir", ca, "svc", "--ttl", "10m").strip()
                  for _ in range(int(os.environ.get("BENCH_TOKENS", "300")))]
        tok_lock = threading.Lock()
        pub = ssl.create_default_context(cafile=str(ca / "ca.crt"))
        anon = lambda: http.client.HTTPSConnection("localhost", port, timeout=30, context=pub)

        def sign(c):
            with tok_lock:
                if not tokens:
                    time.sleep(0.01)
                    return c
                t = tokens.pop()
            c.request("POST", "/api/v1/sign", body=json.dumps({"token": t, "csr": csr}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
            return c

        rows.append(run_load("sign", proc.pid, anon, sign))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    out = ROOT / "bench" / "ca-serve-results-latest.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
