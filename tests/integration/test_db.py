"""The database layer (src/db) against a real PostgreSQL with password
authentication, started here: the unit tests of tests/unit/db/test_db.c run
again on it (MESHTLS_TEST_PG_URL); two processes that migrate at the same
moment migrate once (PostgreSQL and SQLite); the password in a URL never
shows in output, errors or /proc/PID/cmdline; ~/.pgpass and PGPASSWORD
supply the password when the URL has none."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD_DIR, run
from servers import PasswordPostgres, pg_skip_reason

TEST_DB = Path(os.environ.get("MESHTLS_BUILD_DIR", BUILD_DIR)) / "test_db"

pytestmark = [
    pytest.mark.skipif(pg_skip_reason() is not None, reason=str(pg_skip_reason())),
    pytest.mark.skipif(not TEST_DB.exists(), reason=f"{TEST_DB} not built"),
]


def _env(**extra):
    """The environment without any PG* variable of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def test_db(args, env=None, timeout=120):
    return subprocess.run([str(TEST_DB), *args], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


test_db.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def pg():
    server = PasswordPostgres()
    try:
        yield server
    finally:
        server.stop()


def test_unit_tests_on_postgres(pg):
    r = test_db([], env=_env(MESHTLS_TEST_PG_URL=pg.url()), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr + pg.log()[-3000:]
    assert "-- postgres" in r.stdout and "skipped" not in r.stdout
    assert pg.password not in r.stdout + r.stderr


def _migrate_together(url_or_urls, env=None):
    """Start two `test_db migrate` at the same moment; their outputs."""
    urls = url_or_urls if isinstance(url_or_urls, list) else [url_or_urls] * 2
    procs = [subprocess.Popen([str(TEST_DB), "migrate", u], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env or _env())
             for u in urls]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        outs.append((p.returncode, out, err))
    return outs


def test_two_processes_migrate_once_postgres(pg):
    pg.sql("DROP TABLE IF EXISTS demo_migrations, demo_a, demo_b")  # harmless on a fresh server
    outs = _migrate_together(pg.url())
    for rc, out, err in outs:
        assert rc == 0, out + err + pg.log()[-2000:]
    applied = sorted(int(out.split()[1]) for _, out, _ in outs)
    assert applied == [0, 3], outs
    r = subprocess.run(["psql", pg.url(), "-Atc",
                        "SELECT count(*) FROM demo_migrations; SELECT count(*) FROM demo_a"],
                       capture_output=True, text=True, timeout=30, env=_env())
    assert r.stdout.split() == ["3", "1"], r.stdout + r.stderr
    # and a third run later finds nothing to do
    r = test_db(["migrate", pg.url()])
    assert r.returncode == 0 and r.stdout.strip() == "applied 0", r.stdout + r.stderr


def test_two_processes_migrate_once_sqlite(tmp_path):
    url = f"sqlite:{tmp_path}/demo.db"
    for _ in range(3):  # the race is short on SQLite: try it a few times
        (tmp_path / "demo.db").unlink(missing_ok=True)
        outs = _migrate_together(url)
        for rc, out, err in outs:
            assert rc == 0, out + err
        assert sorted(int(out.split()[1]) for _, out, _ in outs) == [0, 3], outs
    assert (tmp_path / "demo.db").stat().st_mode & 0o777 == 0o600


def test_password_never_shown(pg):
    # a wrong password: the error names the URL without it
    bad = pg.url().replace(pg.password, "Wr0ng-passw0rd-x")
    r = test_db(["query", bad])
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr
    assert "Wr0ng-passw0rd-x" not in r.stdout + r.stderr
    assert f"postgres://{pg.user}:***@127.0.0.1:{pg.port}/{pg.dbname}" in r.stderr, r.stderr
    # a password given as ?password= too
    r = test_db(["query", f"postgres://{pg.user}@127.0.0.1:{pg.port}/nosuchdb"
                          f"?password={pg.password}"])
    assert r.returncode != 0 and pg.password not in r.stdout + r.stderr, r.stderr
    assert "password=***" in r.stderr, r.stderr

    # a running process: the URL it was given no longer carries the password in cmdline
    p = subprocess.Popen([str(TEST_DB), "hold", pg.url()], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.poll() else ""
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        assert pg.password.encode() not in cmdline, cmdline
        assert f"{pg.user}:".encode() in cmdline  # the rest of the URL is still there
        # libpq starts no process; nothing below it may carry the password either
        children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        for child in children:
            assert pg.password.encode() not in Path(f"/proc/{child}/cmdline").read_bytes()
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0, p.stderr.read()

    # meshtls ca with a postgres store that holds no CA: says so, without the password
    # (tests/integration/test_ca_pg.py runs the CA on PostgreSQL)
    r = run("ca", "list", "--store", pg.url())
    assert r.returncode != 0
    assert "no CA in database" in r.stderr, r.stderr
    assert pg.password not in r.stdout + r.stderr


def test_pgpass_and_pgpassword(pg, tmp_path):
    url = pg.url(password=False)
    # no password anywhere: refused, saying so
    r = test_db(["query", url], env=_env(PGPASSFILE=str(tmp_path / "none")))
    assert r.returncode != 0, r.stdout
    assert "password" in r.stderr, r.stderr
    # PGPASSWORD
    r = test_db(["query", url], env=_env(PGPASSWORD=pg.password))
    assert r.returncode == 0 and r.stdout.strip() == "one 1", r.stderr
    # .pgpass (through PGPASSFILE, as libpq reads ~/.pgpass by default)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg.port}:{pg.dbname}:{pg.user}:{pg.password}\n")
    pgpass.chmod(0o600)
    r = test_db(["query", url], env=_env(PGPASSFILE=str(pgpass)))
    assert r.returncode == 0 and r.stdout.strip() == "one 1", r.stderr
    # ~/.pgpass itself
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(pgpass.read_text())
    (home / ".pgpass").chmod(0o600)
    r = test_db(["query", url], env=_env(HOME=str(home)))
    assert r.returncode == 0 and r.stdout.strip() == "one 1", r.stderr
    # the other PG* variables fill in what the URL leaves out
    r = test_db(["query", "postgres://"],
                env=_env(PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER=pg.user,
                         PGDATABASE=pg.dbname, PGPASSWORD=pg.password))
    assert r.returncode == 0 and r.stdout.strip() == "one 1", r.stderr
    # a wrong PGPASSWORD is not echoed either
    r = test_db(["query", url], env=_env(PGPASSWORD="Env-wr0ng-pass"))
    assert r.returncode != 0 and "Env-wr0ng-pass" not in r.stdout + r.stderr


def test_ca_list_store_url_same_as_dir(tmp_path):
    """`meshtls ca list --store sqlite:DIR/meshtls.db` lists what `--dir DIR` lists."""
    ca = tmp_path / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", "db.test", check=True)
    run("ca", "register", "--dir", ca, "api", check=True)
    run("ca", "issue", "--dir", ca, "api", "--out", tmp_path / "out", check=True)
    by_dir = run("ca", "list", "--dir", ca, "--json", check=True).stdout
    by_url = run("ca", "list", "--store", f"sqlite:{ca}/meshtls.db", "--json", check=True).stdout
    assert by_dir == by_url and '"api"' in by_dir
    r = run("ca", "list", "--store", f"sqlite:{tmp_path}/none.db")
    assert r.returncode != 0 and "none.db" in r.stderr, r.stderr
    # every subcommand takes it: sqlite:DIR/meshtls.db names DIR (the key files beside it)
    run("ca", "issue", "--store", f"sqlite:{ca}/meshtls.db", "api", "--out", tmp_path / "o2",
        check=True)
    assert (tmp_path / "o2" / "api.crt").exists()
    # a database URL alone does not say where the key files are
    r = run("ca", "issue", "--store", "postgres://u:s3cret@127.0.0.1:1/db", "api")
    assert r.returncode == 2 and "give --dir DIR beside it" in r.stderr and "s3cret" not in r.stderr
