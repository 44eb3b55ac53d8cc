"""Real PostgreSQL and Redis servers for tests, on loopback and free ports,
each stopped by PID.  PostgreSQL refuses to run as root: when the tests run
as root (as in CI), it runs as the `postgres` system user (Debian's package
creates it) in a data directory handed to that user.  That directory is made
under /tmp with mode 0755 (pytest's tmp_path is 0700 and not traversable by
another user) and removed by stop(); a server that fails to start is stopped
and removed before the error is raised."""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_port, wait_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_skip_reason():
    """Why PostgreSQL tests cannot run here, or None if they can."""
    for tool in (PG_BIN / "initdb", PG_BIN / "postgres"):
        if not tool.exists():
            return f"{tool} missing: install postgresql-15 (scripts/install-deps.sh)"
    if not shutil.which("psql"):
        return "psql missing: install postgresql-client (scripts/install-deps.sh)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
        if not shutil.which("runuser"):
            return "running as root and runuser (util-linux) is missing"
    return None


def redis_skip_reason():
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            return f"{tool} missing: install redis-server and redis-tools"
    return None


def _as_pg(cmd, **kw):
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def wait_log(read, text, timeout=10.0):
    """Whether `text` shows up in read() within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while text not in read():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Postgres:
    """A PostgreSQL with ssl=on and certificate authentication (hostssl ... cert)."""

    def __init__(self, server_crt, server_key, ca_crt, crl=None):
        self.proc = self._logf = None
        self.base = Path(tempfile.mkdtemp(prefix="meshtls-pg-"))
        try:
            self._start(server_crt, server_key, ca_crt, crl)
        except BaseException:
            self.stop()
            raise

    def _start(self, server_crt, server_key, ca_crt, crl):
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.port = free_port()
        root = os.geteuid() == 0
        uid = pwd.getpwnam("postgres").pw_uid if root else os.geteuid()
        gid = pwd.getpwnam("postgres").pw_gid if root else os.getegid()
        tls = self.base / "tls"
        tls.mkdir()
        for src, name in ((server_crt, "server.crt"), (server_key, "server.key"),
                          (ca_crt, "ca.crt")):
            shutil.copy(src, tls / name)
        self.crl = tls / "crl.pem"
        if crl:
            shutil.copy(crl, self.crl)
        os.chmod(tls / "server.key", 0o600)  # PostgreSQL refuses a key others can read
        for p in [self.base, tls, *tls.iterdir()]:
            os.chown(p, uid, gid)
        r = _as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                    "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.base}'\nssl = on\n"
                    f"ssl_cert_file = '{tls}/server.crt'\nssl_key_file = '{tls}/server.key'\n"
                    f"ssl_ca_file = '{tls}/ca.crt'\n"
                    + (f"ssl_crl_file = '{self.crl}'\n" if crl else "") +
                    "ssl_min_protocol_version = 'TLSv1.3'\nfsync = off\n")
        # certificate authentication: the client certificate must chain to ca.crt
        # and its CN is the database role
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 cert clientcert=verify-full\n")
        self._launch()

    def _launch(self):
        """Start the server and wait until its log says it accepts connections.
        free_port()'s port was free a moment ago only: a parallel test may take it
        first, and then wait_port() alone would see that other process listening
        (CI saw every connection refused afterwards).  So the server's own
        "ready" line is the signal, and a bind failure retries on a new port."""
        root = os.geteuid() == 0
        for attempt in range(3):
            if attempt:
                self.port = free_port()
                with open(self.data / "postgresql.conf", "a") as f:
                    f.write(f"port = {self.port}\n")  # the last setting wins
            if self._logf:
                self._logf.close()
            self._logf = open(self.base / "log", "w")
            self.proc = subprocess.Popen(
                (["runuser", "-u", "postgres", "--"] if root else []) +
                [str(PG_BIN / "postgres"), "-D", str(self.data)],
                stdout=subprocess.DEVNULL, stderr=self._logf)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if "ready to accept connections" in self.log() or self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            if self.proc.poll() is None and "ready to accept connections" in self.log():
                try:
                    wait_port(self.port, proc=self.proc, timeout=10)
                    return
                except AssertionError as e:
                    raise AssertionError(f"PostgreSQL did not start: {e}\n{self.log()}") from None
            if self.proc.poll() is None:
                raise AssertionError(f"PostgreSQL not ready after 30 s:\n{self.log()}")
            if "could not bind" not in self.log() and "already in use" not in self.log():
                raise AssertionError(f"PostgreSQL exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
        raise AssertionError(f"PostgreSQL could not bind a free port in 3 tries:\n{self.log()}")

    def sql(self, query):
        """Run SQL over the local socket as the superuser."""
        return _as_pg(["psql", "-h", str(self.base), "-p", str(self.port), "-U", "postgres",
                       "-d", "postgres", "-Atc", query])

    def postmaster_pid(self):
        """The postmaster's own PID (self.proc may be runuser, which forwards few signals)."""
        # PostgreSQL rewrites the file while it starts: a read may see it empty; retry
        # (bounded) rather than return None to a caller that signals the PID
        deadline = time.monotonic() + 5
        while True:
            try:
                return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            except (AttributeError, OSError, ValueError):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    def reload_crl(self, crl):
        """Install a new CRL and have the server re-read its SSL files (SIGHUP)."""
        tmp = self.crl.with_suffix(".new")
        shutil.copy(crl, tmp)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.replace(tmp, self.crl)
        os.kill(self.postmaster_pid(), signal.SIGHUP)

    def log(self):
        try:
            return (self.base / "log").read_text()
        except OSError:
            return ""

    def halt(self):
        """Stop the server (fast shutdown) but keep its data: start() brings it back."""
        self._stop_proc()

    def start(self):
        """Start a halted server again on its data directory (and port, if still free)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._launch()

    def stop(self):
        self._stop_proc()
        if self._logf:
            self._logf.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def _stop_proc(self):
        if self.proc is not None and self.proc.poll() is None:
            pid = self.postmaster_pid()
            if pid:
                os.kill(pid, signal.SIGINT)  # fast shutdown
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if pid:
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                    self.proc.kill()
                    self.proc.wait(timeout=10)


class PasswordPostgres(Postgres):
    """A PostgreSQL on plain TCP (no TLS) with password authentication
    (scram-sha-256), for tests of the database layer: role `user` with
    `password` owns database `dbname`.  Stopped and removed like Postgres."""

    def __init__(self, user="meshtls", password="Pw-3xample-s3cret", dbname="meshtls"):
        self.user, self.password, self.dbname = user, password, dbname
        self.proc = self._logf = None
        self.base = Path(tempfile.mkdtemp(prefix="meshtls-pg-"))
        try:
            self._start_plain()
        except BaseException:
            self.stop()
            raise

    def _start_plain(self):
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        r = _as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                    "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.base}'\nfsync = off\n"
                    "password_encryption = 'scram-sha-256'\nmax_connections = 50\n")
        # the superuser over the local socket only; everyone over TCP needs a password
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        self._launch()
        # the socket may answer a moment before the server accepts logins
        deadline = time.monotonic() + 30
        while True:
            r = self.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if r.returncode != 0:
            raise RuntimeError(f"creating the role failed: {r.stderr}\n{self.log()}")
        r = self.sql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")
        if r.returncode != 0:
            raise RuntimeError(f"creating the database failed: {r.stderr}")

    def url(self, password=True):
        """postgres://user[:password]@127.0.0.1:port/dbname"""
        auth = f"{self.user}:{self.password}" if password else self.user
        return f"postgres://{auth}@127.0.0.1:{self.port}/{self.dbname}"


def psql(port, user, crt, key, ca, host="127.0.0.1", sslmode="verify-full"):
    """psql with a client certificate; returns CompletedProcess."""
    conn = (f"host={host} port={port} dbname=postgres user={user} sslmode={sslmode} "
            f"sslrootcert={ca} sslcert={crt} sslkey={key} connect_timeout=10")
    return subprocess.run(["psql", conn, "-Atc", "select 'hello from postgres'"],
                          capture_output=True, text=True, timeout=60)


class Redis:
    """A Redis with tls-port and tls-auth-clients yes (no plaintext port)."""

    def __init__(self, server_crt, server_key, ca_crt):
        self.proc = None
        self.dir = Path(tempfile.mkdtemp(prefix="meshtls-redis-"))
        self.port = free_port()
        self._logf = open(self.dir / "log", "w")
        try:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", "0", "--tls-port", str(self.port),
                 "--bind", "127.0.0.1", "--tls-cert-file", str(server_crt),
                 "--tls-key-file", str(server_key), "--tls-ca-cert-file", str(ca_crt),
                 "--tls-auth-clients", "yes", "--tls-protocols", "TLSv1.3", "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
                stdout=self._logf, stderr=subprocess.STDOUT)
            wait_port(self.port, proc=self.proc, timeout=30)
        except BaseException as e:
            log = self.log()
            self.stop()
            if isinstance(e, AssertionError):
                raise AssertionError(f"Redis did not start: {e}\n{log}") from None
            raise

    def log(self):
        try:
            return (self.dir / "log").read_text()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_cli(port, crt, key, ca, *cmd, tls=True):
    args = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if tls:
        args += ["--tls", "--cacert", str(ca)]
        if crt:
            args += ["--cert", str(crt), "--key", str(key)]
    return subprocess.run(args + list(cmd), capture_output=True, text=True, timeout=30)
