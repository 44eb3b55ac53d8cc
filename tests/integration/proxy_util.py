"""Helpers for proxy tests: start `meshtls proxy`, plaintext backends, and a
PKI made with `meshtls ca`.  Every process started here is stopped by PID."""
import http.server
import os
import re
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import MESHTLS, run, read_child_log


def make_pki(d, td="test.local"):
    """CA `d/ca` for `td`; services api (server side), web, evil; certs in d/certs.
    A second CA `d/other` issues an intruder `web` into d/intruder."""
    ca = d / "ca"
    run("ca", "init", "--dir", ca, "--trust-domain", td, check=True)
    run("ca", "register", "--dir", ca, "api", "--dns", "localhost", "--ip", "127.0.0.1",
        check=True)
    for svc in ("web", "evil"):
        run("ca", "register", "--dir", ca, svc, check=True)
    for svc in ("api", "web", "evil"):
        run("ca", "issue", "--dir", ca, svc, "--out", d / "certs", check=True)
    run("ca", "init", "--dir", d / "other", "--trust-domain", "other.local", check=True)
    run("ca", "register", "--dir", d / "other", "web", check=True)
    run("ca", "issue", "--dir", d / "other", "web", "--out", d / "intruder", check=True)
    return d


_SIGTERM = signal.SIGTERM
OPTIMIZATIONS_OFF = os.environ.get("MESHTLS_TEST_OPTIMIZATIONS") == "off"


class Proxy:
    """A running `meshtls proxy MODE ...`; .port, .status_port, .log()."""

    def __init__(self, mode, *args, status=True, env=None):
        argv = [MESHTLS, "proxy", mode, "--listen", "127.0.0.1:0", *map(str, args)]
        if mode == "server" and OPTIMIZATIONS_OFF:
            # the same tests again with every handshake optimization off (issue 5)
            argv += ["--session-cache-size", "0", "--verify-cache-size", "0"]
        if status:
            argv += ["--status", "127.0.0.1:0"]
        env = dict(env or {})
        if OPTIMIZATIONS_OFF:
            env.setdefault("MESHTLS_OPENSSL_EC_LEGACY", "0")  # OpenSSL's provider path too
        self.logfile = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.logfile,
                                     text=True, env=dict(os.environ, **(env or {})))
        self.port = self.status_port = None
        self.stdout_lines = []  # what start-up read from stdout
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (self.port is None or
                                               (status and self.status_port is None)):
            line = self.proc.stdout.readline()
            if not line:
                break
            # "listening on ADDR", or in JSON mode {"announce":"listening","addr":"ADDR"}
            m = re.match(r"(listening|status) on .*:(\d+)$", line.strip()) or \
                re.match(r'\{"announce":"(listening|status)","addr":".*:(\d+)"\}$', line.strip())
            self.stdout_lines.append(line)
            if m and m.group(1) == "listening":
                self.port = int(m.group(2))
            elif m:
                self.status_port = int(m.group(2))
        if self.port is None:
            self.stop()
            raise AssertionError(f"proxy did not start:\n{self.log()}")

    def log(self):
        return read_child_log(self.logfile)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=_SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        log = self.log()
        # In the ASan+UBSan build a memory error must fail the test that caused it.
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert bad not in log, f"sanitizer report in proxy log:\n{log[-4000:]}"
        return self.proc.returncode


@pytest.fixture
def echo():
    """An EchoServer for one test (import the fixture: `from proxy_util import echo`)."""
    s = EchoServer()
    yield s
    s.close()


@pytest.fixture
def procs():
    """Proxies a test appends here are killed, by PID, when it ends."""
    started = []
    yield started
    for p in started:
        p.stop(signal.SIGKILL)


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        counted = False
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            if not counted:
                # a connection counts once it carries a byte: the proxy's readiness check
                # (a bare connect every 5 s) is not a client reaching the backend
                self.server.connections += 1
                counted = True
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class EchoServer(socketserver.ThreadingTCPServer):
    """Plaintext echo backend that counts connections that sent data; echoes until EOF then
    half-closes."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Echo)
        self.connections = 0
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.connections += 1
        body = f"backend saw {self.path}\n".encode()
        headers = "".join(f"{k}: {v}\n" for k, v in self.headers.items()
                          if k.lower().startswith("x-"))
        body += headers.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Hello)
        self.connections = 0
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


def forge_client_cert(pki, out, name="web", expired=False, eku_server_only=False,
                      seconds_left=None, extensions=(), starts_in=None):
    """A client certificate signed by pki's intermediate CA (so the chain is
    trusted) but expired, with EKU serverAuth only, valid for only `seconds_left`
    more seconds, valid only `starts_in` seconds from now, or with extra
    `extensions` ((extension, critical) pairs): things
    `meshtls ca` refuses to make.  Writes out/NAME.crt (leaf + intermediate) and
    NAME.key."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca = pki / "ca"
    ikey = serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(), None)
    icert = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    nb, na = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired \
        else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))
    if seconds_left is not None:
        na = now + datetime.timedelta(seconds=seconds_left)
    if starts_in is not None:
        nb = now + datetime.timedelta(seconds=starts_in)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH] if eku_server_only else \
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(icert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier(f"spiffe://test.local/svc/{name}")]), False)
         .add_extension(x509.ExtendedKeyUsage(eku), False))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical)
    cert = b.sign(ikey, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) +
                                      icert.public_bytes(serialization.Encoding.PEM))
    kf = out / f"{name}.key"
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kf.chmod(0o600)
    return out
