"""A real Redis with tls-auth-clients yes accepts redis-cli --tls with a
certificate from `meshtls ca issue` (SET then GET) and refuses one from
another CA, a client without a certificate, and plaintext."""
import pytest

from conftest import run
from servers import Redis, redis_cli, redis_skip_reason, wait_log

pytestmark = pytest.mark.skipif(redis_skip_reason() is not None,
                                reason=str(redis_skip_reason()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """CA cache.test: the server `redis` and the client `app` (in good/); an
    unrelated CA evil.test issues its own `app` (in evil/)."""
    d = tmp_path_factory.mktemp("pki")
    for name, td in (("ca", "cache.test"), ("other", "evil.test")):
        run("ca", "init", "--dir", d / name, "--trust-domain", td, check=True)
    run("ca", "register", "--dir", d / "ca", "redis", "--dns", "localhost", "--ip",
        "127.0.0.1", check=True)
    for ca, out in (("ca", "good"), ("other", "evil")):
        run("ca", "register", "--dir", d / ca, "app", check=True)
        run("ca", "issue", "--dir", d / ca, "app", "--out", d / out, check=True)
    run("ca", "issue", "--dir", d / "ca", "redis", "--out", d / "srv", check=True)
    return d


@pytest.fixture
def redis(pki):
    s = pki / "srv"
    server = Redis(s / "redis.crt", s / "redis.key", s / "ca.crt")
    yield server
    server.stop()


def test_issued_certificate_sets_and_gets(pki, redis):
    g = pki / "good"
    r = redis_cli(redis.port, g / "app.crt", g / "app.key", g / "ca.crt", "SET", "k", "meshtls")
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr + redis.log()
    r = redis_cli(redis.port, g / "app.crt", g / "app.key", g / "ca.crt", "GET", "k")
    assert r.returncode == 0 and r.stdout.strip() == "meshtls", r.stdout + r.stderr


def test_certificate_of_another_ca_is_refused(pki, redis):
    g, e = pki / "good", pki / "evil"
    # redis-cli can print an error and still exit 0: judge by the output too
    r = redis_cli(redis.port, e / "app.crt", e / "app.key", g / "ca.crt", "SET", "k", "evil")
    assert r.returncode != 0 and r.stdout.strip() != "OK", r.stdout + r.stderr
    assert "error" in (r.stdout + r.stderr).lower()
    assert wait_log(redis.log, "certificate verify failed"), redis.log()
    # nothing got through: the trusted client does not see the intruder's write
    r = redis_cli(redis.port, g / "app.crt", g / "app.key", g / "ca.crt", "GET", "k")
    assert r.returncode == 0 and r.stdout.strip() != "evil", r.stdout + r.stderr


def test_no_certificate_and_plaintext_are_refused(pki, redis):
    g = pki / "good"
    r = redis_cli(redis.port, None, None, g / "ca.crt", "PING")
    assert r.returncode != 0 and "PONG" not in r.stdout, r.stdout + r.stderr
    assert wait_log(redis.log, "peer did not return a certificate"), redis.log()
    r = redis_cli(redis.port, None, None, None, "PING", tls=False)
    assert r.returncode != 0 and "PONG" not in r.stdout, r.stdout + r.stderr
    assert wait_log(redis.log, "wrong version number"), redis.log()
