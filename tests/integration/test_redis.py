"""A real Redis with tls-auth-clients yes accepts redis-cli --tls with a
certificate from `meshtls ca issue` (SET then GET) and refuses one from
another CA and a client without a certificate."""
import shutil

import pytest

from conftest import run
from servers import Redis, redis_cli

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="Redis not installed")


@pytest.fixture
def pki(tmp_path):
    for name, td in (("ca", "cache.test"), ("other", "evil.test")):
        run("ca", "init", "--dir", tmp_path / name, "--trust-domain", td, check=True)
    run("ca", "register", "--dir", tmp_path / "ca", "redis", "--dns", "localhost", "--ip",
        "127.0.0.1", check=True)
    for ca, out in (("ca", "good"), ("other", "evil")):
        run("ca", "register", "--dir", tmp_path / ca, "app", check=True)
        run("ca", "issue", "--dir", tmp_path / ca, "app", "--out", tmp_path / out, check=True)
    run("ca", "issue", "--dir", tmp_path / "ca", "redis", "--out", tmp_path / "srv", check=True)
    return tmp_path


def test_redis_tls_auth_clients(pki):
    s = pki / "srv"
    rd = Redis(s / "redis.crt", s / "redis.key", s / "ca.crt")
    try:
        g = pki / "good"
        r = redis_cli(rd.port, g / "app.crt", g / "app.key", g / "ca.crt", "SET", "k", "meshtls")
        assert r.stdout.strip() == "OK", r.stderr
        r = redis_cli(rd.port, g / "app.crt", g / "app.key", g / "ca.crt", "GET", "k")
        assert r.stdout.strip() == "meshtls"
        e = pki / "evil"
        r = redis_cli(rd.port, e / "app.crt", e / "app.key", g / "ca.crt", "GET", "k")
        assert "meshtls" not in r.stdout
        assert r.returncode != 0 or "error" in (r.stdout + r.stderr).lower()
        r = redis_cli(rd.port, None, None, None, "GET", "k", tls=False)
        assert "meshtls" not in r.stdout
    finally:
        rd.stop()
