"""PostgreSQL and Redis through both proxies: psql -> proxy client ->
(mTLS) -> proxy server -> a real PostgreSQL; redis-cli SET then GET the same
way (the put/get round trip of seed 001).  A client proxy whose certificate
comes from an untrusted CA gets nothing through."""
import shutil
import signal
import subprocess

import pytest

from conftest import run
from proxy_util import Proxy, make_pki
from servers import PG_BIN, Postgres, Redis

needs = pytest.mark.skipif(not (shutil.which("psql") and shutil.which("redis-server")),
                           reason="PostgreSQL/Redis not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = make_pki(tmp_path_factory.mktemp("pki"))
    run("ca", "register", "--dir", d / "ca", "db", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    run("ca", "issue", "--dir", d / "ca", "db", "--out", d / "db", check=True)
    return d


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.stop(signal.SIGKILL)


def chain(pki, procs, backend_port, certs="certs"):
    c, k = pki / "certs", pki / certs
    srv = Proxy("server", "--target", f"127.0.0.1:{backend_port}", "--cert", c / "api.crt",
                "--key", c / "api.key", "--cacert", c / "ca.crt",
                "--allow-uri", "spiffe://test.local/svc/web")
    procs.append(srv)
    cli = Proxy("client", "--target", f"127.0.0.1:{srv.port}", "--cert", k / "web.crt",
                "--key", k / "web.key", "--cacert", c / "ca.crt",
                "--verify-spiffe-id", "spiffe://test.local/svc/api")
    procs.append(cli)
    return srv, cli


@needs
def test_redis_put_get_through_proxies(pki, procs):
    # the backend Redis speaks TLS itself? No: the sidecar carries the mTLS, so the
    # Redis behind the server proxy listens in plaintext on loopback.
    port = __import__("conftest").free_port()
    rd = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        __import__("conftest").wait_port(port, proc=rd)
        srv, cli = chain(pki, procs, port)
        base = ["redis-cli", "-h", "127.0.0.1", "-p", str(cli.port)]
        r = subprocess.run(base + ["SET", "peer", "value-1"], capture_output=True, text=True,
                           timeout=30)
        assert r.stdout.strip() == "OK", r.stderr + cli.log() + srv.log()
        r = subprocess.run(base + ["GET", "peer"], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "value-1"
        assert srv.metrics()['meshtls_policy_decisions_total{decision="allow"}'] == 2
    finally:
        rd.terminate()
        rd.wait(10)


@needs
def test_redis_untrusted_client_certificate(pki, procs):
    port = __import__("conftest").free_port()
    rd = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        __import__("conftest").wait_port(port, proc=rd)
        srv, cli = chain(pki, procs, port, certs="intruder")
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(cli.port), "SET", "k", "v"],
                           capture_output=True, text=True, timeout=30)
        assert "OK" not in r.stdout
        assert srv.metrics()['meshtls_tls_handshake_errors_total{reason="untrusted"}'] >= 1
    finally:
        rd.terminate()
        rd.wait(10)


@needs
def test_psql_through_proxies(pki, procs, tmp_path):
    # PostgreSQL behind the server proxy, plaintext on loopback (trust auth for the test):
    # identity is enforced by the proxies.
    db = pki / "db"
    pg = Postgres(db / "db.crt", db / "db.key", db / "ca.crt")
    try:
        (pg.data / "pg_hba.conf").write_text("local all all trust\n"
                                             "host all all 127.0.0.1/32 trust\n")
        import os
        os.kill(pg.postmaster_pid(), signal.SIGHUP)
        srv, cli = chain(pki, procs, pg.port)
        conn = f"host=127.0.0.1 port={cli.port} dbname=postgres user=postgres sslmode=disable"
        r = None
        for _ in range(50):  # the HBA reload is asynchronous; bounded retries
            r = subprocess.run(["psql", conn, "-Atc", "select 40 + 2"], capture_output=True,
                               text=True, timeout=30)
            if r.returncode == 0:
                break
            __import__("time").sleep(0.1)
        assert r.returncode == 0, r.stderr + srv.log()
        assert r.stdout.strip() == "42"
    finally:
        pg.stop()


@needs
def test_psql_untrusted_client_certificate(pki, procs):
    db = pki / "db"
    pg = Postgres(db / "db.crt", db / "db.key", db / "ca.crt")
    try:
        (pg.data / "pg_hba.conf").write_text("local all all trust\n"
                                             "host all all 127.0.0.1/32 trust\n")
        import os
        os.kill(pg.postmaster_pid(), signal.SIGHUP)
        srv, cli = chain(pki, procs, pg.port, certs="intruder")
        conn = f"host=127.0.0.1 port={cli.port} dbname=postgres user=postgres sslmode=disable"
        r = subprocess.run(["psql", conn, "-Atc", "select 1"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0
        assert srv.metrics()['meshtls_tls_handshake_errors_total{reason="untrusted"}'] >= 1
    finally:
        pg.stop()
