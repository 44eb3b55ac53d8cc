"""The policy file is part of what a reload swaps (issue 12, section 2): a change is picked up
by SIGHUP and by the file watch with zero failed requests from callers that stay allowed, a
broken file keeps the whole old policy, and a --service the file does not name is refused at
start."""
import os
import signal
import socket
import ssl
import threading

import pytest

from conftest import run
from proxy_util import Proxy, make_pki, wait_for
from proxy_util import echo, procs  # noqa: F401  (pytest fixtures, shared)

TD = "spiffe://test.local/svc"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def write_policy(path, *callers):
    """Replace `path` atomically (as cert-manager and config management do)."""
    rules = "".join(f"          - uri: {TD}/{c}\n" for c in callers)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"services:\n  api:\n    allow:\n{rules}")
    os.replace(tmp, path)


def ctx_for(pki, who):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "certs" / "ca.crt"))
    ctx.load_cert_chain(str(pki / "certs" / f"{who}.crt"), str(pki / "certs" / f"{who}.key"))
    return ctx


def allowed(ctx, port):
    """True if the proxy relays for this caller, False if it closes after the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            try:
                s.sendall(b"ping")
                return s.recv(10) == b"ping"
            except (ConnectionError, ssl.SSLError):
                return False


def start(pki, procs, echo, policy, *extra):
    c = pki / "certs"
    p = Proxy("server", "--target", f"127.0.0.1:{echo.port}", "--cert", c / "api.crt",
              "--key", c / "api.key", "--cacert", c / "ca.crt", "--workers", "2",
              "--policy", policy, "--service", "api", *extra)
    procs.append(p)
    return p


def test_policy_change_under_load_sighup_watch_and_broken_file(pki, procs, echo, tmp_path):
    policy = tmp_path / "policy.yaml"
    write_policy(policy, "web")
    p = start(pki, procs, echo, policy)
    web, evil = ctx_for(pki, "web"), ctx_for(pki, "evil")
    assert allowed(web, p.port) and not allowed(evil, p.port)

    results, stop = [], threading.Event()

    def load():  # an allowed caller, all along: not one request may fail
        while not stop.is_set() and len(results) < 20000:
            results.append(allowed(web, p.port))
    t = threading.Thread(target=load)
    t.start()
    try:
        # 1. SIGHUP picks up a new rule
        write_policy(policy, "web", "evil")
        p.signal(signal.SIGHUP)
        wait_for(lambda: allowed(evil, p.port), what="evil allowed after SIGHUP")
        # 2. the file watch picks up a removal, no signal
        write_policy(policy, "web")
        wait_for(lambda: not allowed(evil, p.port), timeout=15, what="evil denied by the watch")
        assert "reload (file change: --policy" in p.log()
        # 3. a broken file keeps the whole old policy, and says why
        policy.write_text("services:\n  api:\n    allow:\n      - nonsense: [\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: "keeping the current certificate and policy" in p.log(),
                 what="failed reload log")
        assert str(policy) in p.log()
        assert not allowed(evil, p.port)
        # 4. a file that drops our --service is refused the same way
        policy.write_text(f"services:\n  billing:\n    allow:\n      - uri: {TD}/evil\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: "--service api: the policy file" in p.log(), what="service refusal")
        assert allowed(web, p.port) and not allowed(evil, p.port)
    finally:
        stop.set()
        t.join(timeout=30)
    assert len(results) > 20
    assert all(results), f"{results.count(False)} of {len(results)} requests failed"
    assert p.stop() == 0


def test_unknown_service_refused_at_start(pki, tmp_path):
    policy = tmp_path / "policy.yaml"
    write_policy(policy, "web")
    c = pki / "certs"
    r = run("proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
            "--cert", c / "api.crt", "--key", c / "api.key", "--cacert", c / "ca.crt",
            "--policy", policy, "--service", "nosuch", timeout=30)
    assert r.returncode == 2, r.stderr
    assert "--service nosuch" in r.stderr and str(policy) in r.stderr
    assert "add a 'nosuch:' section" in r.stderr


def test_policy_given_twice_is_refused(pki, tmp_path):
    policy = tmp_path / "policy.yaml"
    write_policy(policy, "web")
    c = pki / "certs"
    r = run("proxy", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
            "--cert", c / "api.crt", "--key", c / "api.key", "--cacert", c / "ca.crt",
            "--policy", policy, "--policy", policy, timeout=30)
    assert r.returncode == 2
    assert "give one policy file" in r.stderr


def test_reload_interval_alone_picks_up_the_policy(pki, procs, echo, tmp_path):
    # no watch, no signal: only the timer (proxy.reload_interval, 1 s here) sees the change
    policy = tmp_path / "policy.yaml"
    write_policy(policy, "web")
    p = start(pki, procs, echo, policy, "--no-watch", "--reload-interval", "1s")
    evil = ctx_for(pki, "evil")
    assert not allowed(evil, p.port)
    write_policy(policy, "web", "evil")
    wait_for(lambda: allowed(evil, p.port), timeout=15, what="evil allowed by the interval")
    assert "reload (interval" in p.log(), p.log()
    assert "file change" not in p.log()


def test_open_connection_keeps_the_snapshot_it_started_with(pki, procs, echo, tmp_path):
    # a reload decides for new connections; one already relaying goes on under the policy
    # that admitted it (as HAProxy's and ghostunnel's reloads do), until it closes
    policy = tmp_path / "policy.yaml"
    write_policy(policy, "web")
    p = start(pki, procs, echo, policy, "--no-watch")
    web = ctx_for(pki, "web")
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as raw:
        with web.wrap_socket(raw, server_hostname="localhost") as held:
            held.sendall(b"before")
            assert held.recv(10) == b"before"
            write_policy(policy, "evil")  # web is no longer allowed
            p.signal(signal.SIGHUP)
            wait_for(lambda: p.log().count("reload (SIGHUP") >= 1, what="reload logged")
            wait_for(lambda: not allowed(web, p.port), what="new web connections refused")
            held.sendall(b"after")
            assert held.recv(10) == b"after"
