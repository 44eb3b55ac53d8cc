"""`meshtls dev`: one command, a throwaway PKI whose certificates real TLS peers
accept for mutual TLS; loud about being for development only."""
import json
import socket
import ssl
import stat
import subprocess
import threading

from conftest import run, snapshot


def inspect(path):
    return json.loads(run("cert", "inspect", "--json", path, check=True).stdout)


def test_dev_makes_pki_and_certificates(tmp_path):
    out = tmp_path / "dev"
    r = run("dev", "--out", out, "api", "web", check=True)
    assert "DEVELOPMENT ONLY" in r.stdout
    for name in ("api.crt", "api.key", "web.crt", "web.key", "ca.crt"):
        assert name in r.stdout or name == "ca.crt"
        assert (out / name).exists()
    assert str(out / "ca.crt") in r.stdout
    api = inspect(out / "api.crt")[0]
    assert api["spiffe_id"] == "spiffe://dev.local/svc/api"
    assert set(api["dns"]) == {"api", "localhost"} and set(api["ip"]) == {"127.0.0.1", "::1"}
    assert stat.S_IMODE((out / "api.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca" / "root.key").stat().st_mode) == 0o400
    v = subprocess.run(["openssl", "verify", "-CAfile", out / "ca.crt", "-untrusted",
                        out / "ca" / "intermediate.crt", out / "web.crt"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    rows = json.loads(run("ca", "list", "--dir", out / "ca", "--json", check=True).stdout)
    assert sorted(x["service"] for x in rows) == ["api", "web"]


def test_dev_certificates_do_mutual_tls(tmp_path):
    """api serves, web connects: both sides verify each other with Python's ssl."""
    out = tmp_path / "dev"
    run("dev", "--out", out, "api", "web", check=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(out / "api.crt", out / "api.key")
    sctx.load_verify_locations(out / "ca.crt")
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_cert_chain(out / "web.crt", out / "web.key")
    cctx.load_verify_locations(out / "ca.crt")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(10)
    seen = {}

    def serve():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            seen["peer"] = s.getpeercert()
            s.sendall(b"hello")

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(lsock.getsockname(), timeout=10) as raw:
        with cctx.wrap_socket(raw, server_hostname="localhost") as c:
            assert c.recv(5) == b"hello"
            assert ("URI", "spiffe://dev.local/svc/api") in c.getpeercert()["subjectAltName"]
    t.join(10)
    lsock.close()
    assert ("URI", "spiffe://dev.local/svc/web") in seen["peer"]["subjectAltName"]


def test_dev_again_reuses_the_ca(tmp_path):
    out = tmp_path / "dev"
    run("dev", "--out", out, "api", check=True)
    root = (out / "ca" / "root.crt").read_bytes()
    r = run("dev", "--out", out, "api", "db", check=True)
    assert "reusing" in r.stdout
    assert (out / "ca" / "root.crt").read_bytes() == root
    assert (out / "db.crt").exists()
    rows = json.loads(run("ca", "list", "--dir", out / "ca", "--json", check=True).stdout)
    assert sorted((x["service"], x["status"]) for x in rows) == [
        ("api", "active"), ("api", "superseded"), ("db", "active")]


def test_dev_usage(tmp_path):
    r = run("dev", "--help")
    assert r.returncode == 0 and "usage" in r.stdout and "DEVELOPMENT ONLY" in r.stdout
    before = snapshot(tmp_path)
    r = run("dev", "--out", tmp_path / "x")
    assert r.returncode == 2 and "SERVICE" in r.stderr
    r = run("dev", "api")
    assert r.returncode == 2 and "--out" in r.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "x").exists()


def test_dev_bad_service_name(tmp_path):
    r = run("dev", "--out", tmp_path / "x", "api", "Bad Name")
    assert r.returncode == 1 and "service name 'Bad Name'" in r.stderr
    assert not (tmp_path / "x").exists()
