"""`meshtls ca serve` (issue 10), what the other files leave out: the server started on
`--store sqlite:DIR/meshtls.db` alone, tokens stored hashed (the plaintext nowhere in the
database file), token failures and stale peers in /metrics, the heartbeat that keeps a peer
live, and a request whose head is dribbled slower than the head timeout (408) while another
client is served."""
import hashlib
import http.client
import socket
import sqlite3
import ssl
import subprocess
import threading
import time

from conftest import MESHTLS, run
from proxy_util import make_pki
from test_ca_serve import TD, Server, call, ctx, make_csr, token


def metrics(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.status_port, timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert r.status == 200
    out = {}
    for line in r.read().decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ---- --store sqlite:DIR/meshtls.db ----------------------------------------------------------

def test_store_sqlite_url_alone_serves_and_checks(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    url = f"sqlite:{ca / 'meshtls.db'}"
    ok = run("ca", "serve", "--store", url, "--listen", "127.0.0.1:0", "--check")
    assert ok.returncode == 0 and "configuration OK" in ok.stdout and str(ca) in ok.stdout, ok
    # relative to the working directory, like --dir
    ok = subprocess.run([MESHTLS, "ca", "serve", "--store", "sqlite:ca/meshtls.db", "--listen",
                         "127.0.0.1:0", "--check"], cwd=pki, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr
    bad = run("ca", "serve", "--store", f"sqlite:{tmp_path / 'nope' / 'meshtls.db'}",
              "--listen", "127.0.0.1:0", "--check")
    assert bad.returncode == 1 and "nope" in bad.stderr and "ca init" in bad.stderr, bad.stderr

    s = Server(pki, where=["--store", url])
    try:
        code, body = call(s, pki, "GET", "/api/peers", svc="web")
        assert code == 200 and body["peers"] == [], body
        # the same store as `ca token --dir`: a token made there is redeemed here
        run("ca", "register", "--dir", ca, "viaurl", check=True)
        t = token(pki, "viaurl")
        csr, _ = make_csr(tmp_path, "viaurl", sans=[f"URI:spiffe://{TD}/svc/viaurl"])
        code, body = call(s, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
        assert code == 200 and body["service"] == "viaurl", body
        serials = run("ca", "list", "--dir", ca, "--json", check=True).stdout
        assert body["serial"] in serials
    finally:
        assert s.stop() == 0


# ---- tokens are stored hashed -----------------------------------------------------------------

def test_tokens_are_stored_hashed_never_in_plaintext(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    t = token(pki, "web")
    secret = t[len("mtt_"):]
    db = ca / "meshtls.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        rows = c.execute("SELECT hash, service FROM serve_tokens").fetchall()
        # no column of any table holds the token or its secret part
        dump = "\n".join(c.iterdump())
    assert rows == [(hashlib.sha256(t.encode()).hexdigest(), "web")], rows
    assert t not in dump and secret not in dump
    # nor do the bytes of the database file and its journal (a row once written and
    # overwritten could linger in a free page or in the WAL)
    for f in ca.glob("meshtls.db*"):
        raw = f.read_bytes()
        assert secret.encode() not in raw, f
    # the token still works: the server hashes what it is given and finds the row
    s = Server(pki)
    try:
        csr, _ = make_csr(tmp_path, "web", sans=[f"URI:spiffe://{TD}/svc/web"])
        code, body = call(s, pki, "POST", "/api/v1/sign", body={"token": t, "csr": csr})
        assert code == 200, body
    finally:
        assert s.stop() == 0
    for f in ca.glob("meshtls.db*"):
        assert secret.encode() not in f.read_bytes(), f


# ---- /metrics: token failures by reason, stale peers --------------------------------------------

TOK = 'meshtls_ca_token_redemptions_total{{result="{}"}}'
PEERS = 'meshtls_ca_peers{{state="{}"}}'


def test_metrics_count_token_failures_by_reason_and_stale_peers(tmp_path):
    pki = make_pki(tmp_path)
    # no worker run: the stale peer stays in the table until we look
    s = Server(pki, "--peer-ttl", "1s", "--lifecycle-interval", "off")
    try:
        before = metrics(s)
        for r in ("success", "invalid", "expired", "used", "csr_mismatch"):
            assert TOK.format(r) in before, r
        csr, _ = make_csr(tmp_path, "web", sans=[f"URI:spiffe://{TD}/svc/web"])
        other, _ = make_csr(tmp_path, "evil", sans=[f"URI:spiffe://{TD}/svc/evil"])
        sign = lambda t, c=csr: call(s, pki, "POST", "/api/v1/sign", body={"token": t, "csr": c})
        # unknown: well formed, never issued; invalid: not even a token
        assert sign("mtt_" + "B" * 43)[1]["error"]["code"] == "invalid_token"
        assert sign("nope")[1]["error"]["code"] == "invalid_token"
        # a CSR for another identity than the token's service
        t = token(pki, "web")
        code, body = sign(t, other)
        assert code in (400, 403) and body["error"]["code"] != "invalid_token", body
        # success, then the same token again
        t = token(pki, "web")
        assert sign(t)[0] == 200
        assert sign(t)[1]["error"]["code"] == "token_used"
        # expired (1 second; the server and `ca token` share the real clock)
        t = token(pki, "web", ttl="1s")
        time.sleep(2.1)
        assert sign(t)[1]["error"]["code"] == "token_expired"
        after = metrics(s)
        delta = {r: after[TOK.format(r)] - before[TOK.format(r)]
                 for r in ("success", "invalid", "expired", "used", "csr_mismatch")}
        assert delta == {"success": 1, "invalid": 2, "expired": 1, "used": 1,
                         "csr_mismatch": 1}, delta

        # peers: one registered is alive, and stale once its TTL has passed without a heartbeat
        assert after[PEERS.format("alive")] == 0 and after[PEERS.format("stale")] == 0, after
        code, _ = call(s, pki, "POST", "/api/peers", body={"address": "10.0.0.9:1"}, svc="evil")
        assert code == 200
        # counted at once: alive, or already stale when the scrape came after its short TTL
        # (a slow machine, the sanitizer build)
        m = metrics(s)
        assert m[PEERS.format("alive")] + m[PEERS.format("stale")] == 1, m
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and metrics(s)[PEERS.format("stale")] != 1:
            time.sleep(0.2)
        m = metrics(s)
        assert (m[PEERS.format("alive")], m[PEERS.format("stale")]) == (0, 1), m
    finally:
        assert s.stop() == 0


# ---- /api/peers: a heartbeat extends the TTL ---------------------------------------------------

def test_heartbeat_keeps_a_peer_live_past_its_first_ttl(tmp_path):
    pki = make_pki(tmp_path)
    ttl = 2
    s = Server(pki, "--peer-ttl", f"{ttl}s", "--lifecycle-interval", "off")
    web, evil = f"spiffe://{TD}/svc/web", f"spiffe://{TD}/svc/evil"

    def beat(svc):
        code, body = call(s, pki, "POST", "/api/peers", body={"address": "10.0.0.1:1"}, svc=svc)
        assert code == 200, body
        return body["expires_at"]

    def live():
        code, body = call(s, pki, "GET", "/api/peers", svc="api")
        assert code == 200
        return {p["spiffe_id"] for p in body["peers"]}

    try:
        t0 = time.monotonic()
        first = beat("web")
        beat("evil")
        assert live() >= {web, evil}
        # web heartbeats every 0.4 s, evil never again: evil drops out after its TTL, web stays
        last = first
        seen = live()
        deadline = t0 + ttl + 8
        while time.monotonic() < deadline and (evil in seen or time.monotonic() < t0 + ttl + 1):
            time.sleep(0.4)
            last = beat("web")
            seen = live()
        assert evil not in seen, seen
        assert web in seen, seen
        assert time.monotonic() - t0 > ttl + 1  # well past web's first expiry
        assert last >= first + ttl, (first, last)  # each heartbeat pushed its expiry on
        # and once web stops, it drops out too
        deadline = time.monotonic() + ttl + 8
        while time.monotonic() < deadline and web in live():
            time.sleep(0.3)
        assert web not in live()
    finally:
        assert s.stop() == 0


# ---- a slow request: 408, closed, and the others are served meanwhile ---------------------------

def test_head_dribbled_slower_than_the_head_timeout_gets_408_and_is_closed(tmp_path):
    pki = make_pki(tmp_path)
    s = Server(pki, "--lifecycle-interval", "off")
    served, stop = [], threading.Event()

    def other_client():
        # a second client on its own connections while the slow one hangs on
        while not stop.is_set() and len(served) < 200:
            code, _ = call(s, pki, "GET", "/api/peers", svc="web")
            served.append((time.monotonic(), code))
            stop.wait(0.5)

    try:
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        t = ctx(pki, "api").wrap_socket(raw, server_hostname="localhost")
        t.sendall(b"GET /api/peers HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        th = threading.Thread(target=other_client)
        th.start()
        # one header line a second, never the blank line that ends the head; the server's
        # head timeout is 10 s (docs/CONTROL-PLANE.md), so well within 30 lines it answers
        out = b""
        for i in range(30):
            try:
                t.sendall(b"X-Slow-%d: y\r\n" % i)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                break  # closed after the answer: read what it sent
            try:
                t.settimeout(1.0)
                chunk = t.recv(4096)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    break
            except socket.timeout:
                continue
        answered = time.monotonic()
        assert out.startswith(b"HTTP/1.1 408 "), out[:200]
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"application/json" in head and b"connection: close" in head.lower(), head
        # then the server closes: EOF (or a reset), within a bounded wait
        t.settimeout(5)
        rest = b""
        try:
            while True:
                chunk = t.recv(4096)
                if not chunk:
                    break
                rest += chunk
                assert len(rest) < 65536
        except OSError:
            pass  # a reset after the answer is a close too
        t.close()
        stop.set()
        th.join(timeout=30)
        assert not th.is_alive()
        # the other client was answered while the slow one was still being read
        during = [code for at, code in served if started < at < answered]
        assert during and all(code == 200 for code in during), served
        assert "timeout" in (body + rest).decode(errors="replace"), body
    finally:
        stop.set()
        assert s.stop() == 0
