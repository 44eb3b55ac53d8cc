"""`make demo` runs scripts/demo.sh: it must pass on this build and say, in
words, what happened."""
import os
import subprocess

from conftest import BUILD_DIR, MESHTLS, SOURCE_DIR


def test_demo_script_passes():
    env = dict(os.environ, MESHTLS_BUILD_DIR=str(BUILD_DIR), MESHTLS_BIN=MESHTLS)
    r = subprocess.run(["bash", str(SOURCE_DIR / "scripts" / "demo.sh")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    out = r.stdout
    assert "Demo passed" in out
    assert "orders → billing: mutual TLS handshake succeeded" in out
    assert "refused during the handshake" in out
    assert "denied before any byte reached billing" in out
    assert 'meshtls_policy_decisions_total{decision="deny"} 1' in out
