"""log.format and log.level, shown by `meshtls config` as effective, are applied by the proxy
from the environment and the YAML file (issue 12, section 5); a flag still wins."""
import json
import signal

import pytest

from conftest import run
from proxy_util import Proxy, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def start(pki, *extra, env=None):
    c = pki / "certs"
    return Proxy("server", "--target", "127.0.0.1:9", "--cert", c / "api.crt", "--key",
                 c / "api.key", "--cacert", c / "ca.crt", "--allow-all", *extra, env=env)


def stopped_log(p):
    assert p.stop(signal.SIGTERM) == 0
    return [line for line in p.log().splitlines() if line.strip()]


def test_log_format_json_from_env(pki):
    p = start(pki, env={"MESHTLS_LOG_FORMAT": "json"})
    lines = stopped_log(p)
    # stdout carries the address announcements, as JSON too, and nothing else: no log line
    rest = p.proc.stdout.read()
    assert rest == "", rest
    assert len(p.stdout_lines) == 2
    announced = [json.loads(x) for x in p.stdout_lines]
    assert {a["announce"] for a in announced} == {"listening", "status"}
    assert f"127.0.0.1:{p.port}" in [a["addr"] for a in announced]
    assert lines
    for line in lines:
        rec = json.loads(line)  # every line is one JSON object
        assert "msg" in rec and "level" in rec
    assert any("listening on" in json.loads(x)["msg"] for x in lines)


def test_log_level_from_yaml_and_flag_wins(pki, tmp_path):
    conf = tmp_path / "meshtls.yaml"
    conf.write_text("log:\n  level: warn\n")
    lines = stopped_log(start(pki, "--config", conf))
    assert not any("listening on" in x for x in lines), lines  # info dropped
    lines = stopped_log(start(pki, "--config", conf, "--log-level", "info"))
    assert any("listening on" in x for x in lines)


def test_bad_log_format_from_env_is_named(pki):
    c = pki / "certs"
    r = run("proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
            "--cert", c / "api.crt", "--key", c / "api.key", "--cacert", c / "ca.crt",
            "--allow-all", env={"MESHTLS_LOG_FORMAT": "xml"}, timeout=30)
    assert r.returncode == 2
    assert "xml" in r.stderr and "MESHTLS_LOG_FORMAT" in r.stderr, r.stderr
