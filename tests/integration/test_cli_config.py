"""Every command's flags, environment variables and YAML keys come from its key table
(issue 12 s.5): for each command, a key applied from a flag, from MESHTLS_<SECTION>_<KEY>
and from the --config file's section (flag > environment > file); --help generated from
the tables, each flag once; a bad value refused with exit 2, naming the key."""
import json
import re

import pytest

from conftest import run


def help_flags(*args):
    """The flags a --help lists (first column), in order."""
    r = run(*args, "--help")
    assert r.returncode == 0 and "usage" in r.stdout, (args, r.stderr)
    flags = []
    for line in r.stdout.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)(, (--[a-z0-9-]+))?", line)
        if m:
            flags.append(m.group(1))
            if m.group(3):
                flags.append(m.group(3))
    return flags


# command line, the flags its --help must list (each exactly once)
HELP = [
    (["dev"], ["--out", "--config", "--help", "--log-level"]),
    (["cert", "inspect"], ["--json", "--config"]),
    (["cert", "check"], ["--min-days"]),
    (["cert", "verify"], ["--ca", "--cacert", "--crl", "--purpose"]),
    (["cert"], ["--json", "--min-days", "--ca", "--crl", "--purpose"]),
    (["connect"], ["--proxy", "--cert", "--key", "--cacert", "--connect-id", "--server-name",
                   "--server-spiffe-id", "--server-trust-domain", "--timeout", "--ssh-config",
                   "--host"]),
    (["proxy", "router"], ["--listen", "--cert", "--server-cert", "--key", "--server-key",
                           "--cacert", "--ca-certs", "--crl", "--issuer", "--store", "--db-host",
                           "--db-port", "--db-user", "--db-name", "--db-password", "--status",
                           "--cache-ttl", "--no-connection-log", "--check", "--log-format"]),
    (["router"], ["--store", "--org", "--addr", "--user", "--team", "--host-user"]),
    (["ca", "serve"], ["--dir", "--store", "--listen", "--status", "--admin", "--san",
                       "--workers", "--peer-ttl", "--days", "--lifecycle-interval",
                       "--rotate-within", "--check", "--config"]),
    (["ca", "token"], ["--dir", "--store", "--ttl"]),
    (["ca", "issue"], ["--dir", "--out", "--days", "--csr"]),
    (["ca", "revoke"], ["--dir", "--serial", "--reason", "--replace"]),
    (["ca", "list"], ["--dir", "--store", "--json", "--service", "--status",
                      "--expiring-within"]),
    (["ca", "root-crl"], ["--root-key", "--days", "--reason", "--revoke-intermediate"]),
]


@pytest.mark.parametrize("cmd,want", HELP, ids=[" ".join(h[0]) for h in HELP])
def test_help_is_generated_each_flag_once(cmd, want):
    flags = help_flags(*cmd)
    dup = sorted({f for f in flags if flags.count(f) > 1})
    assert not dup, (cmd, dup)
    for f in want:
        assert f in flags, (cmd, f, flags)


# command line, bad flag, bad value, the key the message must name
BAD = [
    (["dev", "api"], "--out", "", "dev.out"),
    (["cert", "check", "x.crt"], "--min-days", "soon", "cert.min_days"),
    (["cert", "verify", "x.crt"], "--purpose", "both", "cert.purpose"),
    (["connect", "--connect-id", "h"], "--timeout", "soon", "connect.timeout"),
    (["proxy", "router"], "--db-port", "99999", "router.db_port"),
    (["router", "orgs"], "--org", "", "router.org"),
    (["ca", "serve", "--dir", "x"], "--workers", "0", "ca_serve.workers"),
    (["ca", "token", "svc"], "--ttl", "forever", "ca.token_ttl"),
    (["ca", "issue", "--dir", "x", "svc", "--out", "o"], "--days", "826", "ca.days"),
    (["ca", "root-crl", "--dir", "x", "--root-key", "k"], "--days", "3651", "ca.ca_days"),
    (["ca", "list", "--dir", "x"], "--status", "gone", "ca.status"),
]


@pytest.mark.parametrize("cmd,flag,value,key", BAD, ids=[b[3] for b in BAD])
def test_bad_value_exit_2_names_the_key(cmd, flag, value, key):
    r = run(*cmd, f"{flag}={value}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert key in r.stderr, r.stderr


def test_bad_environment_and_file_values_name_the_key(tmp_path):
    for cmd, env, yaml_text, key in ENV_FILE_BAD:
        r = run(*cmd, env={env[0]: env[1]})
        assert r.returncode == 2 and env[0] in r.stderr and key in r.stderr, (cmd, r.stderr)
        f = tmp_path / "bad.yaml"
        f.write_text(yaml_text)
        r = run(*cmd, "--config", f)
        assert r.returncode == 2 and "bad.yaml:2" in r.stderr and key in r.stderr, (cmd, r.stderr)


ENV_FILE_BAD = [
    (["dev", "api"], ("MESHTLS_DEV_OUT", ""), "dev:\n  out: [a]\n", "dev.out"),
    (["cert", "check", "x.crt"], ("MESHTLS_CERT_MIN_DAYS", "-1"), "cert:\n  min_days: x\n",
     "cert.min_days"),
    (["connect"], ("MESHTLS_CONNECT_TIMEOUT", "0"), "connect:\n  timeout: 2h\n",
     "connect.timeout"),
    (["proxy", "router"], ("MESHTLS_ROUTER_CACHE_TTL", "2h"), "router:\n  user_rate: -1\n",
     "router."),
    (["ca", "serve"], ("MESHTLS_CA_SERVE_PEER_TTL", "1ms"), "ca_serve:\n  days: 900\n",
     "ca_serve."),
    (["ca", "token", "svc"], ("MESHTLS_CA_TOKEN_TTL", "0"), "ca:\n  token_ttl: x\n",
     "ca.token_ttl"),
    (["ca", "rotate", "--dir", "x"], ("MESHTLS_CA_WITHIN_DAYS", "x"), "ca:\n  days: 0\n",
     "ca."),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    run("dev", "--out", d, "api", "router", "alice", check=True)
    return d


# ---- one key per command from each source ---------------------------------------------

def test_dev_out_from_flag_env_and_file(tmp_path):
    a, b, c = tmp_path / "flag", tmp_path / "env", tmp_path / "file"
    y = tmp_path / "dev.yaml"
    y.write_text(f"dev:\n  out: {c}\n")
    run("dev", "--config", y, "api", check=True)
    assert (c / "api.crt").exists()
    run("dev", "--config", y, "api", env={"MESHTLS_DEV_OUT": str(b)}, check=True)
    assert (b / "api.crt").exists()
    run("dev", "--config", y, "--out", a, "api", env={"MESHTLS_DEV_OUT": str(b)}, check=True)
    assert (a / "api.crt").exists()


def test_cert_min_days_from_flag_env_and_file(pki, tmp_path):
    crt = pki / "api.crt"
    y = tmp_path / "cert.yaml"
    y.write_text("cert:\n  min_days: 1\n")
    assert run("cert", "check", "--config", y, crt).returncode == 0
    env = {"MESHTLS_CERT_MIN_DAYS": "100000"}
    r = run("cert", "check", "--config", y, crt, env=env)
    assert r.returncode == 1 and "at least" not in r.stdout and "100000" in r.stdout, r.stdout
    assert run("cert", "check", "--config", y, crt, "--min-days", "1", env=env).returncode == 0
    # verify: the CA bundle from the environment; a flag of another subcommand is refused
    r = run("cert", "verify", crt, env={"MESHTLS_CERT_CA": str(pki / "ca.crt")})
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    r = run("cert", "inspect", "--min-days", "3", crt)
    assert r.returncode == 2 and "cert.min_days" in r.stderr


def test_connect_proxy_from_flag_env_and_file(pki, tmp_path):
    """--ssh-config prints where it would connect: the key's effective value."""
    base = ["connect", "--ssh-config", "--cert", pki / "alice.crt", "--key", pki / "alice.key",
            "--cacert", pki / "ca.crt"]
    y = tmp_path / "c.yaml"
    y.write_text("connect:\n  proxy: file.example:4443\n")
    out = run(*base, "--config", y, check=True).stdout
    assert "--proxy file.example:4443" in out
    env = {"MESHTLS_CONNECT_PROXY": "env.example:4443"}
    assert "--proxy env.example:4443" in run(*base, "--config", y, env=env, check=True).stdout
    out = run(*base, "--config", y, "--proxy", "flag.example:1", env=env, check=True).stdout
    assert "--proxy flag.example:1" in out
    # an argument of one invocation has no variable
    r = run("connect", "--proxy", "x:1", "--cert", "a", "--key", "b", "--cacert", "c",
            env={"MESHTLS_CONNECT_CONNECT_ID": "h"})
    assert r.returncode == 2 and "give --connect-id" in r.stderr, r.stderr


def test_router_issuer_from_flag_env_and_file(pki, tmp_path):
    """`proxy router --check` prints the effective issuer and database."""
    y = tmp_path / "r.yaml"
    y.write_text(f"router:\n  listen: 127.0.0.1:0\n  cert: {pki / 'router.crt'}\n"
                 f"  key: {pki / 'router.key'}\n  cacert: {pki / 'ca.crt'}\n"
                 f"  issuer: file.example\n  store: sqlite:{tmp_path / 'f.db'}\n")
    r = run("proxy", "router", "--config", y, "--check")
    assert r.returncode == 0 and "issuer file.example" in r.stdout, r.stderr
    env = {"MESHTLS_ROUTER_ISSUER": "env.example"}
    r = run("proxy", "router", "--config", y, "--check", env=env)
    assert r.returncode == 0 and "issuer env.example" in r.stdout, r.stderr
    r = run("proxy", "router", "--config", y, "--check", "--issuer", "flag.example", env=env)
    assert r.returncode == 0 and "issuer flag.example" in r.stdout, r.stderr
    # 004's alias of --cert, and a flag of the data commands refused by name
    r = run("proxy", "router", "--config", y, "--check", "--server-cert", pki / "router.crt")
    assert r.returncode == 0, r.stderr
    r = run("proxy", "router", "--config", y, "--check", "--org", "acme")
    assert r.returncode == 2 and "router.org" in r.stderr
    # the data commands share router.store
    env = {"MESHTLS_ROUTER_STORE": f"sqlite:{tmp_path / 'data.db'}"}
    run("router", "users", "add", "alice", "--org", "acme", env=env, check=True)
    assert "acme" in run("router", "orgs", env=env, check=True).stdout


def test_ca_serve_and_token_keys_from_flag_env_and_file(tmp_path):
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "example.org", check=True)
    run("ca", "register", "--dir", ca, "svc", check=True)
    y = tmp_path / "s.yaml"
    y.write_text(f"ca_serve:\n  dir: {ca}\n  listen: 127.0.0.1:0\n")
    r = run("ca", "serve", "--config", y, "--check")
    assert r.returncode == 0 and "listen 127.0.0.1:0" in r.stdout, r.stderr
    env = {"MESHTLS_CA_SERVE_LISTEN": "127.0.0.1:1"}
    r = run("ca", "serve", "--config", y, "--check", env=env)
    assert r.returncode == 0 and "listen 127.0.0.1:1" in r.stdout, r.stderr
    r = run("ca", "serve", "--config", y, "--check", "--listen", "[::1]:0", env=env)
    assert r.returncode == 0 and "listen [::1]:0" in r.stdout, r.stderr
    # token: ca.dir and ca.token_ttl from the file, the environment and a flag
    y2 = tmp_path / "t.yaml"
    y2.write_text(f"ca:\n  dir: {ca}\n  token_ttl: 2m\n")
    r = run("ca", "token", "--config", y2, "svc")
    assert r.returncode == 0 and "valid 120 s" in r.stderr, r.stderr
    r = run("ca", "token", "--config", y2, "svc", env={"MESHTLS_CA_TOKEN_TTL": "3m"})
    assert r.returncode == 0 and "valid 180 s" in r.stderr, r.stderr
    r = run("ca", "token", "--config", y2, "svc", "--ttl", "4m", env={"MESHTLS_CA_TOKEN_TTL": "3m"})
    assert r.returncode == 0 and "valid 240 s" in r.stderr, r.stderr


def test_ca_days_and_dir_from_flag_env_and_file(tmp_path):
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "example.org", check=True)
    y = tmp_path / "ca.yaml"
    y.write_text(f"ca:\n  dir: {ca}\n  days: 10\n")
    run("ca", "register", "--config", y, "svc", check=True)  # ca.dir from the file
    r = run("ca", "issue", "--config", y, "svc", "--out", tmp_path / "o", check=True)
    assert "(10 days)" in r.stdout
    env = {"MESHTLS_CA_DAYS": "20", "MESHTLS_CA_DIR": str(ca)}
    r = run("ca", "issue", "svc", "--out", tmp_path / "o", env=env, check=True)
    assert "(20 days)" in r.stdout
    r = run("ca", "issue", "--config", y, "svc", "--out", tmp_path / "o", "--days", "30",
            env=env, check=True)
    assert "(30 days)" in r.stdout
    # a --store flag beats a configured ca.dir (both as flags: used together)
    r = run("ca", "list", "--store", f"sqlite:{ca / 'meshtls.db'}", env=env, check=True)
    assert "svc" in r.stdout
    r = run("ca", "list", "--store", f"sqlite:{ca / 'meshtls.db'}", "--dir", ca, check=True)
    assert "svc" in r.stdout  # both: the keys in DIR, the data at the URL
    # arguments of one invocation: no variable, no YAML key
    r = run("ca", "rotate", "--dir", ca, env={"MESHTLS_CA_FORCE": "true"}, check=True)
    assert "nothing to rotate" in r.stdout and "MESHTLS_CA_FORCE" in r.stderr
    y.write_text("ca:\n  force: true\n")
    r = run("ca", "rotate", "--dir", ca, "--config", y)
    assert r.returncode == 2 and "give --force" in r.stderr, r.stderr


def test_config_lists_every_command_and_hides_passwords(tmp_path):
    keys = {k["key"]: k for k in json.loads(run("config", "--keys", "--json", check=True).stdout)}
    for k in ("ca.dir", "ca_serve.listen", "router.store", "router.db_password", "connect.proxy",
              "cert.min_days", "dev.out"):
        assert k in keys, k
    assert keys["ca.serial"]["env"] == ""  # an argument of one invocation
    y = tmp_path / "r.yaml"
    y.write_text("router:\n  db_password: fromfile-s3cret\n")
    env = {"MESHTLS_ROUTER_STORE": "postgres://u:env-s3cret@db.example/x",
           "MESHTLS_CONNECT_TIMEOUT": "3s"}
    for args in (["config", "--config", y], ["config", "--config", y, "--json"]):
        r = run(*args, env=env, check=True)
        assert "s3cret" not in r.stdout + r.stderr, r.stdout
        assert "postgres://u:***@db.example/x" in r.stdout and "***" in r.stdout
        assert "3s" in r.stdout  # shown as effective: `meshtls connect` applies it
    # `meshtls config` takes the library's and the proxy's flags only
    r = run("config", "--store", "sqlite:x")
    assert r.returncode == 2 and "router.store" in r.stderr


# section -> the help pages that together must list every flag of its keys
SECTIONS = {
    "ca": [["ca"], ["ca", "token"]],
    "ca_serve": [["ca", "serve"]],
    "router": [["proxy", "router"], ["router"]],
    "connect": [["connect"]],
    "cert": [["cert"]],
    "dev": [["dev"]],
}


def test_every_key_of_every_command_is_in_its_help():
    keys = json.loads(run("config", "--keys", "--json", check=True).stdout)
    for section, pages in SECTIONS.items():
        flags = set()
        for page in pages:
            flags |= set(help_flags(*page))
        mine = [k for k in keys if k["key"].startswith(section + ".")]
        assert mine, section
        missing = {k["flag"] for k in mine if k["flag"]} - flags
        assert not missing, (section, missing)


def _sample(k):
    """A value of key `k`'s type that every key of that type accepts."""
    if k["type"] == "enum":
        # the enums without a default, and their first choice (docs/CONFIG.md)
        return k["default"] or {"proxy.forward_identity": "proxy-v2",
                                "cert.purpose": "client"}[k["key"]]
    return {"path": "/tmp/meshtls-sample", "int": "2", "duration": "30s", "bool": "true",
            "SPIFFE ID": "spiffe://example.org/sample", "trust domain": "example.org",
            "text": "sample"}[k["type"]]


def _shown(k):
    """What `meshtls config` prints for _sample(k): a password never, as ***."""
    return "***" if "password" in k["key"] else _sample(k)


def test_every_key_of_every_command_from_environment_and_file(tmp_path):
    # all 140-odd keys of every command's table: each one set from its MESHTLS_* variable, and
    # each one set under its section of a --config file, reaches the effective configuration
    # with that source (what `meshtls config` shows); the commands read them through the same
    # path (cli_config_load / meshtls_config_parse_args), and the flag form is in each
    # command's --help (test_every_key_of_every_command_is_in_its_help)
    keys = json.loads(run("config", "--keys", "--json", check=True).stdout)
    assert len(keys) > 100
    env_keys = [k for k in keys if k.get("env")]  # argument-only keys have none: by design
    missing = []
    for k in env_keys:
        var = k["env"].split(",")[0].strip()
        got = json.loads(run("config", "--json", env={var: _sample(k)}, check=True).stdout)
        if got[k["key"]] != {"value": _shown(k), "source": var}:
            missing.append((k["key"], "env", got[k["key"]]))
    # one file with every key in its section
    sections = {}
    for k in env_keys:
        sec, name = k["key"].split(".", 1)
        sections.setdefault(sec, []).append((name, _sample(k)))
    y = tmp_path / "all.yaml"
    y.write_text("".join(f"{sec}:\n" + "".join(f"  {n}: '{v}'\n" for n, v in items)
                         for sec, items in sections.items()))
    got = json.loads(run("config", "--config", y, "--json", check=True).stdout)
    for k in env_keys:
        e = got[k["key"]]
        if e["value"] != _shown(k) or not e["source"].startswith(f"{y}:"):
            missing.append((k["key"], "file", e))
    assert not missing, missing
