"""`meshtls ca serve` (issue 10), what the other files leave out: the server started on
`--store sqlite:DIR/meshtls.db` alone, tokens stored hashed (the plaintext nowhere in the
database file), token failures and stale peers in /metrics, the heartbeat that keeps a peer
live, and a request whose head is dribbled slower than the head timeout (408) while another
client is served."""
import hashlib
import http.client
import re
import socket
import sqlite3
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
