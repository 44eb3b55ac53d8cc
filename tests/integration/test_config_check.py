"""`meshtls proxy server|client ... --check` and `meshtls config --check` (issue 12 s.5):
everything the proxy would refuse at start is found without binding anything, every class
of error is named, a good configuration passes with one "configuration ok" line.  Also:
--help is generated from the key tables (each flag once), and every key `meshtls config`
shows is applied by the proxy (MESHTLS_LOG_FORMAT=json)."""
import json
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import MESHTLS, run
from proxy_util import Proxy

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MESHTLS_", "GRPC_"))}


def meshtls(*args, env=None):
    """`meshtls ARGS` with a clean MESHTLS_*/GRPC_* environment plus `env`."""
    return subprocess.run([MESHTLS, *map(str, args)], capture_output=True, text=True,
                          env=dict(BASE_ENV, **(env or {})), timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    run("dev", "--out", d, "api", "other", check=True)
    (d / "policy.yaml").write_text(
        "services:\n  billing:\n    allow:\n      - uri: spiffe://dev.local/svc/other\n")
    return d


def server(pki, *extra):
    return ["proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
            "--cert", pki / "api.crt", "--key", pki / "api.key", "--cacert", pki / "ca.crt",
            *extra]


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_good_configuration_passes_and_binds_nothing(pki):
    port = unused_port()
    r = meshtls(*server(pki, "--policy", pki / "policy.yaml", "--service", "billing",
                        "--allow-cn", "ops"), "--listen", f"127.0.0.1:{port}", "--check")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("configuration ok: proxy server") and "\n" not in line
    assert f"listen=127.0.0.1:{port}" in line and "service=billing" in line
    with socket.socket() as s:  # nothing listens there: --check did not bind
        assert s.connect_ex(("127.0.0.1", port)) != 0
    r = meshtls("proxy", "client", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
                "--cert", pki / "other.crt", "--key", pki / "other.key", "--cacert",
                pki / "ca.crt", "--verify-spiffe-id", "spiffe://dev.local/svc/api", "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("configuration ok: proxy client")


def _broken(pki, tmp_path, kind):
    """(args, env, expected text) for one class of error."""
    yaml = tmp_path / "c.yaml"
    if kind == "unknown key":
        yaml.write_text("proxy:\n  max_conn: 5\n")
        return server(pki, "--allow-all", "--config", yaml), {}, \
            f"{yaml}:2: unknown key 'proxy.max_conn' (did you mean 'proxy.max_conns'?)"
    if kind == "unknown flag":
        return server(pki, "--allow-all", "--max-con", "5"), {}, \
            "unknown option '--max-con' (did you mean '--max-conns'?)"
    if kind == "wrong type":
        return server(pki, "--allow-all"), {"MESHTLS_PROXY_WORKERS": "many"}, \
            "MESHTLS_PROXY_WORKERS: 'many' for proxy.workers: expected a whole number from 1 to 256"
    if kind == "out of range":
        yaml.write_text("proxy:\n  max_conns: 0\n")
        return server(pki, "--allow-all", "--config", yaml), {}, \
            f"{yaml}:2: '0' for proxy.max_conns: expected a whole number from 1 to 1000000"
    if kind == "bad duration":
        return server(pki, "--allow-all", "--idle-timeout", "48h"), {}, \
            "--idle-timeout: '48h' for proxy.idle_timeout"
    if kind == "bad address":
        return server(pki, "--allow-all", "--target", "127.0.0.1"), {}, \
            "address: --target: address '127.0.0.1': expected HOST:PORT"
    if kind == "bad port":
        return server(pki, "--allow-all", "--listen", "127.0.0.1:99999"), {}, \
            "--listen '127.0.0.1:99999': the port must be 0 to 65535"
    if kind == "plaintext hop":
        return server(pki, "--allow-all", "--target", "192.0.2.1:80"), {}, \
            "--target 192.0.2.1:80 is not a loopback address"
    if kind == "missing cert":
        return server(pki, "--allow-all", "--cert", tmp_path / "nope.crt"), {}, "nope.crt"
    if kind == "broken key":
        bad = tmp_path / "bad.key"
        bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
        bad.chmod(0o600)
        return server(pki, "--allow-all", "--key", bad), {}, "bad.key"
    if kind == "key not matching cert":
        return server(pki, "--allow-all", "--key", pki / "other.key"), {}, \
            "does not match the certificate"
    if kind == "broken policy file":
        pol = tmp_path / "p.yaml"
        pol.write_text("services:\n  billing:\n    allow:\n      - color: red\n")
        return server(pki, "--policy", pol), {}, f"{pol}:4: unknown rule 'color'"
    if kind == "service not in policy":
        return server(pki, "--policy", pki / "policy.yaml", "--service", "orders"), {}, \
            "--service orders: the policy file"
    if kind == "bad allow rule":
        return (server(pki, "--allow-uri", "http://nope/*"), {},
                "--allow-uri: rule uri 'http://nope/*'")
    if kind == "bad allow rule from env":
        return server(pki), {"MESHTLS_PROXY_ALLOW": "color=red"}, \
            "MESHTLS_PROXY_ALLOW: proxy.allow item 'color=red'"
    if kind == "no policy":
        return server(pki), {}, "no access policy"
    if kind == "flag of the other mode":
        return server(pki, "--allow-all", "--server-name", "x"), {}, \
            "--server-name does not apply to this mode"
    raise AssertionError(kind)


CLASSES = ["unknown key", "unknown flag", "wrong type", "out of range", "bad duration",
           "bad address", "bad port", "plaintext hop", "missing cert", "broken key",
           "key not matching cert", "broken policy file", "service not in policy",
           "bad allow rule", "bad allow rule from env", "no policy", "flag of the other mode"]


@pytest.mark.parametrize("kind", CLASSES)
def test_check_catches_each_class(pki, tmp_path, kind):
    args, env, want = _broken(pki, tmp_path, kind)
    r = meshtls(*args, "--check", env=env)
    assert r.returncode == 2, (kind, r.stdout, r.stderr)
    assert want in r.stderr, (kind, r.stderr)
    assert "configuration ok" not in r.stdout


def test_check_reports_every_class_at_once(pki, tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("services:\n  billing:\n    allow:\n      - color: red\n")
    r = meshtls("proxy", "server", "--listen", "127.0.0.1:0", "--target", "192.0.2.1:80",
                "--status", "nohost", "--cert", pki / "api.crt", "--key", pki / "other.key",
                "--cacert", pki / "ca.crt", "--policy", pol, "--check")
    assert r.returncode == 2
    for want in ("address: --status", "plaintext hop: --target 192.0.2.1:80",
                 "policy: " + f"{pol}:4", "TLS: the private key", "configuration has 4 errors"):
        assert want in r.stderr, r.stderr


def test_start_refuses_what_check_refuses(pki):
    """The same rules at start: a --service the policy file does not name stops the proxy."""
    r = meshtls(*server(pki, "--policy", pki / "policy.yaml", "--service", "orders"))
    assert r.returncode == 2 and "--service orders" in r.stderr and "add a 'orders:'" in r.stderr
    r = meshtls(*server(pki, "--allow-all", "--listen", "127.0.0.1:70000"))
    assert r.returncode == 2 and "the port must be 0 to 65535" in r.stderr


def test_config_check_validates_the_proxy_section(pki, tmp_path):
    f = tmp_path / "p.yaml"
    body = (f"server:\n  cert_file: {pki / 'api.crt'}\n  key_file: {pki / 'api.key'}\n"
            f"  ca_file: {pki / 'ca.crt'}\nproxy:\n  listen: 127.0.0.1:0\n"
            f"  target: 127.0.0.1:9\n  policy_file: {pki / 'policy.yaml'}\n")
    f.write_text(body + "  service: billing\n")
    r = meshtls("config", "--check", "--config", f)
    assert r.returncode == 0, r.stderr
    assert "server configuration OK" in r.stderr
    f.write_text(body + "  service: orders\n")
    r = meshtls("config", "--check", "--config", f)
    assert r.returncode == 1 and "proxy server: policy: --service orders" in r.stderr
    f.write_text(body + "  allow_cn: ops\n  workers: 0\n")
    r = meshtls("config", "--check", "--config", f)
    assert r.returncode == 1 and f"{f}:10: '0' for proxy.workers" in r.stderr
    f.write_text(body.replace("127.0.0.1:9", "192.0.2.1:80"))
    r = meshtls("config", "--check", "--config", f)
    assert r.returncode == 1 and "plaintext hop" in r.stderr


def _help_flags(text):
    return re.findall(r"^  (--[a-z0-9-]+)", text, re.M)


@pytest.mark.parametrize("args", [["proxy", "--help"], ["proxy", "server", "--help"],
                                  ["proxy", "client", "--help"]])
def test_help_prints_each_flag_once(args):
    r = meshtls(*args)
    assert r.returncode == 0, r.stderr
    flags = _help_flags(r.stdout)
    dupes = {f for f in flags if flags.count(f) > 1}
    assert not dupes, dupes
    assert "--check" in flags and "--config" in flags and "--listen" in flags
    if args[-2] == "server":
        assert "--allow-cn" in flags and "--server-name" not in flags
    if args[-2] == "client":
        assert "--server-name" in flags and "--allow-cn" not in flags and "--target-tls" not in flags
    if args[1] == "--help":
        for flag in ("--target-tls", "--allow-uri", "--verify-spiffe-id", "--no-watch",
                     "--insecure-listen", "--session-cache-size", "--log-format"):
            assert flag in flags


def test_every_key_with_a_flag_is_in_proxy_help():
    keys = json.loads(meshtls("config", "--keys", "--json").stdout)
    flags = set(_help_flags(meshtls("proxy", "--help").stdout))
    # `config --keys` lists every command's keys; the proxy's are the library's and proxy.*
    mine = ("server.", "client.", "log.", "proxy.")
    missing = {k["flag"] for k in keys if k["flag"] and k["key"].startswith(mine)} - flags
    # the proxy always requires client certificates: it takes no --insecure-no-client-cert
    assert missing == {"--insecure-no-client-cert"}, missing


def test_log_format_json_from_env_takes_effect(pki):
    p = Proxy("server", "--target", "127.0.0.1:9", "--cert", pki / "api.crt", "--key",
              pki / "api.key", "--cacert", pki / "ca.crt", "--allow-all", status=False,
              env={"MESHTLS_LOG_FORMAT": "json"})
    try:
        assert p.stop(signal.SIGTERM) == 0
    finally:
        p.stop()
    lines = [line for line in p.log().splitlines() if line.strip()]
    assert lines
    assert all(isinstance(json.loads(line), dict) for line in lines), lines


def test_config_md_reference_is_the_table():
    """docs/CONFIG.md's reference is `meshtls config --keys --markdown`, pasted: the table is
    the source, the page follows it."""
    from conftest import SOURCE_DIR
    doc = (SOURCE_DIR / "docs" / "CONFIG.md").read_text()
    begin = "<!-- BEGIN KEYS: meshtls config --keys --markdown -->\n"
    start = doc.index(begin) + len(begin)
    section = doc[start:doc.index("<!-- END KEYS -->")]
    r = meshtls("config", "--keys", "--markdown")
    assert r.returncode == 0, r.stderr
    assert section == r.stdout, "docs/CONFIG.md reference is stale: paste `meshtls config --keys --markdown`"


def test_repeated_flag_is_one_key_with_items():
    r = meshtls("config", "--allow-cn", "a", "--allow-cn", "b", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["proxy.allow_cn"] == {"value": "a\nb", "source": "--allow-cn"}
    r = meshtls("config", "--allow-cn", "a", "--allow-cn", "b")
    line = next(x for x in r.stdout.splitlines() if x.startswith("proxy.allow_cn"))
    assert line.split(None, 1)[1].split() == ["a,", "b", "--allow-cn"]


def test_check_reads_env_and_yaml_like_start(pki, tmp_path):
    """--check sees the same configuration start would: flags, MESHTLS_*/GRPC_* and the file."""
    f = tmp_path / "p.yaml"
    f.write_text(f"server:\n  cert_file: {pki / 'api.crt'}\n  key_file: {pki / 'api.key'}\n"
                 "proxy:\n  listen: 127.0.0.1:0\n  allow_uri: spiffe://dev.local/svc/other\n"
                 "  workers: 3\n")
    env = {"GRPC_CLIENT_CA_CERT_PATH": str(pki / "ca.crt"), "MESHTLS_PROXY_TARGET": "127.0.0.1:9"}
    r = meshtls("proxy", "server", "--config", f, "--check", env=env)
    assert r.returncode == 0, r.stderr
    assert "workers=3" in r.stdout and "target=127.0.0.1:9" in r.stdout and "rules=1" in r.stdout
    r = meshtls("proxy", "server", "--config", f, "--workers", "4", "--check", env=env)
    assert "workers=4" in r.stdout
    r = meshtls("proxy", "server", "--config", f, "--check")  # no CA bundle, no target
    assert r.returncode == 2
    assert "required: --listen and --target are required" in r.stderr
    assert "TLS: " in r.stderr
