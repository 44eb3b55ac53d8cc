"""Real PostgreSQL and Redis servers for tests, on loopback and free ports,
each stopped by PID.  PostgreSQL refuses to run as root: when the tests run
as root (as in CI), it runs as the `postgres` system user (Debian's package
creates it) in a data directory handed to that user."""
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


def _as_pg(cmd, **kw):
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


class Postgres:
    """A PostgreSQL with ssl=on and certificate authentication (hostssl ... cert)."""

    def __init__(self, server_crt, server_key, ca_crt, crl=None):
        self.base = Path(tempfile.mkdtemp(prefix="meshtls-pg-"))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.port = free_port()
        uid = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
        gid = pwd.getpwnam("postgres").pw_gid if os.geteuid() == 0 else os.getegid()
        tls = self.base / "tls"
        tls.mkdir()
        for src, name in ((server_crt, "server.crt"), (server_key, "server.key"),
                          (ca_crt, "ca.crt")):
            shutil.copy(src, tls / name)
        self.crl = tls / "crl.pem"
        if crl:
            shutil.copy(crl, self.crl)
        os.chmod(tls / "server.key", 0o600)
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
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 cert clientcert=verify-full\n")
        self.proc = subprocess.Popen(
            (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) +
            [str(PG_BIN / "postgres"), "-D", str(self.data)],
            stdout=subprocess.DEVNULL, stderr=open(self.base / "log", "w"))
        wait_port(self.port, proc=self.proc, timeout=30)

    def sql(self, query):
        """Run SQL over the local socket as the superuser."""
        return _as_pg(["psql", "-h", str(self.base), "-p", str(self.port), "-U", "postgres",
                       "-d", "postgres", "-Atc", query])

    def postmaster_pid(self):
        """The postmaster's own PID (self.proc may be runuser, which forwards few signals)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def reload_crl(self, crl):
        shutil.copy(crl, self.crl)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.crl, pw.pw_uid, pw.pw_gid)
        os.kill(self.postmaster_pid(), signal.SIGHUP)  # re-reads its SSL files

    def log(self):
        return (self.base / "log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            pid = self.postmaster_pid()
            if pid:
                os.kill(pid, signal.SIGINT)  # fast shutdown
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def psql(port, user, crt, key, ca, host="127.0.0.1", sslmode="verify-full"):
    """psql with a client certificate; returns CompletedProcess."""
    conn = (f"host={host} port={port} dbname=postgres user={user} sslmode={sslmode} "
            f"sslrootcert={ca} sslcert={crt} sslkey={key} connect_timeout=10")
    return subprocess.run(["psql", conn, "-Atc", "select 'hello from postgres'"],
                          capture_output=True, text=True, timeout=60)


class Redis:
    """A Redis with tls-port and tls-auth-clients yes (no plaintext port)."""

    def __init__(self, server_crt, server_key, ca_crt):
        self.dir = Path(tempfile.mkdtemp(prefix="meshtls-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(server_crt), "--tls-key-file", str(server_key),
             "--tls-ca-cert-file", str(ca_crt), "--tls-auth-clients", "yes",
             "--tls-protocols", "TLSv1.3", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no"],
            stdout=open(self.dir / "log", "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, proc=self.proc, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_cli(port, crt, key, ca, *cmd, tls=True):
    args = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if tls:
        args += ["--tls", "--cert", str(crt), "--key", str(key), "--cacert", str(ca)]
    return subprocess.run(args + list(cmd), capture_output=True, text=True, timeout=30)
