"""Every command's flags, environment variables and YAML keys come from its key table
(issue 12 s.5): for each command, a key applied from a flag, from MESHTLS_<SECTION>_<KEY>
and from the --config file's section (flag > environment > file); --help generated from
the tables, each flag once; a bad value refused with exit 2, naming the key."""
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
