"""Shared fixtures for meshtls integration tests.

Every test spawns the real `meshtls` binary (MESHTLS_BIN, set by ctest) and
real peers (openssl, curl, psql, redis-cli, Python's ssl).  Loopback only,
port 0 or free ports, every wait bounded.
"""
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("MESHTLS_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("MESHTLS_BUILD_DIR", SOURCE_DIR / "build"))
MESHTLS = os.environ.get("MESHTLS_BIN", str(BUILD_DIR / "meshtls"))


def run(*args, check=False, env=None, timeout=60, input=None):
    """Run `meshtls ARGS...`; returns CompletedProcess with text stdout/stderr."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.run([MESHTLS, *map(str, args)], capture_output=True, text=True,
                       env=full_env, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"meshtls {' '.join(map(str, args))} exited {p.returncode}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


# Debian's libfaketime, for tests that move a child's clock (installed by install-deps.sh)
FAKETIME = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
                             Path("/usr/lib/faketime/libfaketimeMT.so.1")) if p.exists()), None)


def faketime_env(**settings):
    """The environment that runs a child under libfaketime with `settings` (FAKETIME=..., or
    FAKETIME_TIMESTAMP_FILE=...); monotonic time stays real (timeouts, intervals).  In the
    sanitizer build the ASan runtime must then not insist on coming first among the
    preloaded libraries: libfaketime only wraps time calls."""
    asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0"]))
    return {"LD_PRELOAD": str(FAKETIME), "DONT_FAKE_MONOTONIC": "1", "ASAN_OPTIONS": asan,
            **settings}


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=15.0, proc=None):
    """Wait until something accepts on host:port (bounded); fail if `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {host}:{port} after {timeout}s")


def snapshot(path):
    """Map of relative path -> (mode, bytes) for every file below `path`."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (p.stat().st_mode, p.read_bytes())
    return out


@pytest.fixture
def meshtls():
    return run


def read_child_log(f):
    """All of `f`, a file a child process writes to as its stderr, read without moving the
    file offset the two share: seek(0) + read() from the parent let the child's next
    write land at the start and overwrite lines (tests then waited for lines that were
    gone).  os.pread reads at an offset and leaves the shared one alone."""
    fd = f.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
