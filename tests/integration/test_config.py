"""`meshtls config`: the effective configuration with the source of each
value (flag > environment > YAML file > default), and errors that name the
variable, FILE:LINE or key (docs/CONFIG.md)."""
import json
import os
import subprocess

import pytest

from conftest import MESHTLS, run

BASE_ENV = {k: v for k, v in os.environ.items()
            if not k.startswith(("MESHTLS_", "GRPC_"))}


def cfg(*args, env=None):
    """Run `meshtls config ARGS` with a clean MESHTLS_*/GRPC_* environment plus `env`."""
    return subprocess.run([MESHTLS, "config", *map(str, args)], capture_output=True, text=True,
                          env=dict(BASE_ENV, **(env or {})), timeout=30)


def effective(*args, env=None):
    r = cfg("--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_precedence_and_sources(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text("peer_tls:\n  cert_file: /yaml.crt\n  key_file: /yaml.key\n  ca_file: /ca.crt\n"
                 "  server_name: mesh.internal\nlog:\n  format: json\n")
    out = effective("--config", f, "--key", "/flag.key",
                    env={"GRPC_SERVER_CERT_PATH": "/env.crt",
                         "GRPC_SERVER_DOMAIN": "grpc.internal"})
    assert out["server.cert_file"] == {"value": "/env.crt", "source": "GRPC_SERVER_CERT_PATH"}
    assert out["server.key_file"] == {"value": "/flag.key", "source": "--key"}
    assert out["server.ca_file"] == {"value": "/ca.crt", "source": f"{f}:4"}
    assert out["client.cert_file"]["value"] == "/yaml.crt"  # peer_tls fills both roles
    assert out["client.key_file"]["value"] == "/yaml.key"  # --key went to the server role
    assert out["client.server_name"] == {"value": "grpc.internal", "source": "GRPC_SERVER_DOMAIN"}
    assert out["server.require_client_cert"] == {"value": "true", "source": "default"}
    assert out["server.crl_file"] == {"value": None, "source": "unset"}
    assert out["log.format"] == {"value": "json", "source": f"{f}:7"}


def test_one_key_through_every_layer(tmp_path):
    """The same key set in all four places: each layer removed shows the next one."""
    f = tmp_path / "app.yaml"
    f.write_text("client:\n  min_tls_version: '1.2'\n")
    key = "client.min_tls_version"
    layers = [
        (["--config", f, "--role", "client", "--tls-min-version", "1.3"],
         {"MESHTLS_CLIENT_MIN_TLS_VERSION": "1.2"}, "1.3", "--tls-min-version"),
        (["--config", f, "--role", "client"],
         {"MESHTLS_CLIENT_MIN_TLS_VERSION": "1.3"}, "1.3", "MESHTLS_CLIENT_MIN_TLS_VERSION"),
        (["--config", f, "--role", "client"], {}, "1.2", f"{f}:2"),
        (["--role", "client"], {}, "1.3", "default"),
    ]
    for args, env, value, source in layers:
        assert effective(*args, env=env)[key] == {"value": value, "source": source}


def test_meshtls_name_beats_grpc_alias():
    out = effective(env={"GRPC_SERVER_CERT_PATH": "/grpc.crt",
                         "MESHTLS_SERVER_CERT_FILE": "/meshtls.crt"})
    assert out["server.cert_file"] == {"value": "/meshtls.crt",
                                       "source": "MESHTLS_SERVER_CERT_FILE"}


def test_kubernetes_grpc_environment():
    """The exact env block of a seed-003 Deployment fills both roles."""
    env = {"GRPC_SERVER_CERT_PATH": "/etc/grpc-tls/tls.crt",
           "GRPC_SERVER_KEY_PATH": "/etc/grpc-tls/tls.key",
           "GRPC_CLIENT_CA_CERT_PATH": "/etc/grpc-tls/ca.crt",
           "GRPC_REQUIRE_CLIENT_CERT": "true",
           "GRPC_SERVER_CA_CERT_PATH": "/etc/grpc-tls/ca.crt",
           "GRPC_CLIENT_CERT_PATH": "/etc/grpc-tls/client.crt",
           "GRPC_CLIENT_KEY_PATH": "/etc/grpc-tls/client.key",
           "GRPC_SERVER_DOMAIN": "user-service.nova.svc.cluster.local"}
    out = effective(env=env)
    want = {"server.cert_file": "GRPC_SERVER_CERT_PATH", "server.key_file": "GRPC_SERVER_KEY_PATH",
            "server.ca_file": "GRPC_CLIENT_CA_CERT_PATH",
            "server.require_client_cert": "GRPC_REQUIRE_CLIENT_CERT",
            "client.ca_file": "GRPC_SERVER_CA_CERT_PATH", "client.cert_file": "GRPC_CLIENT_CERT_PATH",
            "client.key_file": "GRPC_CLIENT_KEY_PATH", "client.server_name": "GRPC_SERVER_DOMAIN"}
    for key, var in want.items():
        assert out[key] == {"value": env[var], "source": var}


def test_text_output_and_json_escaping(tmp_path):
    r = cfg("--cert", 'we"ird\\name.crt')
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("server.cert_file"))
    assert line.split() == ["server.cert_file", 'we"ird\\name.crt', "--cert"]
    out = effective("--cert", 'we"ird\\name.crt')
    assert out["server.cert_file"]["value"] == 'we"ird\\name.crt'


def test_switch_flag_and_table_flags():
    out = effective("--insecure-no-client-cert", "--log-level", "debug", "--listen", "[::1]:0")
    assert out["server.require_client_cert"] == {"value": "false",
                                                 "source": "--insecure-no-client-cert"}
    assert out["log.level"] == {"value": "debug", "source": "--log-level"}
    assert out["proxy.listen"]["source"] == "--listen"


def test_keys_listing():
    r = cfg("--keys", "--json")
    assert r.returncode == 0, r.stderr
    keys = {k["key"]: k for k in json.loads(r.stdout)}
    assert keys["server.cert_file"]["env"] == "MESHTLS_SERVER_CERT_FILE, GRPC_SERVER_CERT_PATH"
    assert keys["server.cert_file"]["flag"] == "--cert"
    assert keys["server.require_client_cert"]["default"] == "true"
    assert keys["server.expiry_warn_days"]["type"] == "int"
    r = cfg("--keys")
    assert r.returncode == 0 and "client.verify_trust_domain" in r.stdout


def test_help_answers():
    r = cfg("--help")
    assert r.returncode == 0
    for word in ("--config", "--role", "--check", "--cert", "--server-name", "docs/CONFIG.md"):
        assert word in r.stdout
    r = cfg("--no-such-flag")
    assert r.returncode == 2 and "meshtls config --help" in r.stderr
    r = cfg("--role", "router")
    assert r.returncode == 2 and "--role 'router'" in r.stderr
    r = cfg("stray")
    assert r.returncode == 2 and "unexpected argument 'stray'" in r.stderr


@pytest.mark.parametrize("env, yaml, args, want", [
    ({"GRPC_REQUIRE_CLIENT_CERT": "maybe"}, None, [],
     "GRPC_REQUIRE_CLIENT_CERT: 'maybe' is not a boolean for server.require_client_cert"),
    ({"MESHTLS_SERVER_EXPIRY_WARN_DAYS": "lots"}, None, [],
     "MESHTLS_SERVER_EXPIRY_WARN_DAYS: 'lots' for server.expiry_warn_days"),
    ({}, "server:\n  cert_file: /a\n  cert_fiel: /b\n", [],
     "{f}:3: unknown key 'server.cert_fiel' (did you mean 'server.cert_file'?)"),
    ({}, "server:\n  require_client_cert: [true]\n", [],
     "{f}:2: server.require_client_cert must be a single value, not a list or mapping "
     "(expected true or false)"),
    ({}, "server:\n  cert_file: a\nserver:\n  key_file: b\n", [],
     "{f}:3: section 'server' appears twice"),
    ({}, None, ["--tls-min-version", "1.0"], "--tls-min-version: '1.0' for server.min_tls_version"),
    ({}, None, ["--check"], "server.cert_file is not set: give --cert, set "
                            "MESHTLS_SERVER_CERT_FILE (or GRPC_SERVER_CERT_PATH)"),
    ({}, None, ["--check", "--role", "client", "--cert", "c", "--key", "k", "--cacert", "ca"],
     "client.server_name is not set"),
])
def test_errors_name_variable_field_and_line(tmp_path, env, yaml, args, want):
    f = tmp_path / "bad.yaml"
    if yaml is not None:
        f.write_text(yaml)
        args = ["--config", f, *args]
    r = cfg(*args, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert want.format(f=f) in r.stderr
    if "--check" not in args:
        assert r.stdout == ""  # a load error prints no half table


def test_missing_or_oversized_file(tmp_path):
    r = cfg("--config", tmp_path / "missing.yaml")
    assert r.returncode == 1 and "missing.yaml" in r.stderr
    big = tmp_path / "big.yaml"
    big.write_text("#" * (1024 * 1024 + 1))
    r = cfg("--config", big)
    assert r.returncode == 1 and "big.yaml" in r.stderr


def test_check_builds_the_context(tmp_path):
    d = tmp_path
    run("dev", "--out", d, "api", check=True)
    f = d / "app.yaml"
    f.write_text(f"peer_tls:\n  cert_file: {d / 'api.crt'}\n  key_file: {d / 'api.key'}\n"
                 f"  ca_file: {d / 'ca.crt'}\n  server_name: api\n")
    for role in ("server", "client"):
        r = cfg("--check", "--config", f, "--role", role)
        assert r.returncode == 0, r.stderr
        assert f"{role} configuration OK" in r.stderr
    r = cfg("--check", "--cert", d / "api.crt", "--key", d / "api.key", "--cacert", d / "ca.crt")
    assert r.returncode == 0, r.stderr
    r = cfg("--check", "--config", f, "--cacert", d / "nope.crt")
    assert r.returncode == 1 and "nope.crt" in r.stderr
    (d / "api.key").chmod(0o644)
    r = cfg("--check", "--cert", d / "api.crt", "--key", d / "api.key", "--cacert", d / "ca.crt")
    assert r.returncode == 1 and "chmod 600" in r.stderr
