"""`meshtls config`: the effective configuration with the source of each
value (flag > environment > YAML file > default), and named errors."""
import json
import os

from conftest import run

BASE_ENV = {k: v for k, v in os.environ.items()
            if not k.startswith(("MESHTLS_", "GRPC_"))}


def cfg(*args, env=None):
    full = dict(BASE_ENV, **(env or {}))
    import subprocess
    from conftest import MESHTLS
    return subprocess.run([MESHTLS, "config", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=30)


def test_precedence_and_sources(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text("peer_tls:\n  cert_file: /yaml.crt\n  key_file: /yaml.key\n  ca_file: /ca.crt\n"
                 "  server_name: mesh.internal\nlog:\n  format: json\n")
    r = cfg("--config", f, "--json", "--key", "/flag.key",
            env={"GRPC_SERVER_CERT_PATH": "/env.crt", "GRPC_SERVER_DOMAIN": "grpc.internal"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["server.cert_file"] == {"value": "/env.crt", "source": "GRPC_SERVER_CERT_PATH"}
    assert out["server.key_file"] == {"value": "/flag.key", "source": "--key"}
    assert out["server.ca_file"]["value"] == "/ca.crt"
    assert out["server.ca_file"]["source"] == f"{f}:4"
    assert out["client.cert_file"]["value"] == "/yaml.crt"  # peer_tls fills both roles
    assert out["client.server_name"] == {"value": "grpc.internal", "source": "GRPC_SERVER_DOMAIN"}
    assert out["server.require_client_cert"] == {"value": "true", "source": "default"}
    assert out["log.format"]["value"] == "json"


def test_errors_name_variable_field_and_line(tmp_path):
    r = cfg(env={"GRPC_REQUIRE_CLIENT_CERT": "maybe"})
    assert r.returncode == 1 and "GRPC_REQUIRE_CLIENT_CERT" in r.stderr
    f = tmp_path / "bad.yaml"
    f.write_text("server:\n  cert_file: /a\n  cert_fiel: /b\n")
    r = cfg("--config", f)
    assert r.returncode == 1 and f"{f}:3: unknown key 'server.cert_fiel'" in r.stderr
    r = cfg("--config", tmp_path / "missing.yaml")
    assert r.returncode == 1 and "missing.yaml" in r.stderr
    r = cfg("--check")
    assert r.returncode == 1 and "server.cert_file is not set" in r.stderr


def test_check_builds_the_context(tmp_path):
    d = tmp_path
    run("dev", "--out", d, "api", check=True)
    r = cfg("--check", "--cert", d / "api.crt", "--key", d / "api.key", "--cacert", d / "ca.crt")
    assert r.returncode == 0, r.stderr
    assert "server configuration OK" in r.stderr
    (d / "api.key").chmod(0o644)
    r = cfg("--check", "--cert", d / "api.crt", "--key", d / "api.key", "--cacert", d / "ca.crt")
    assert r.returncode == 1 and "chmod 600" in r.stderr
