"""scripts/check-layers.py (run by `make check-src`): the tree passes, and an include
against the layering is named with its file and line."""
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import SOURCE_DIR

CHECKER = Path(SOURCE_DIR) / "scripts" / "check-layers.py"


def run(root):
    return subprocess.run([sys.executable, str(CHECKER), str(root)], capture_output=True,
                          text=True, timeout=60)


def test_the_tree_keeps_its_layers():
    r = run(SOURCE_DIR)
    assert r.returncode == 0, r.stderr


def test_an_upward_include_is_named(tmp_path):
    shutil.copytree(Path(SOURCE_DIR) / "src", tmp_path / "src")
    shutil.copytree(Path(SOURCE_DIR) / "include", tmp_path / "include")
    cases = [("net", "engine.c", "proxy.h", 1), ("lib", "log.c", "net.h", 1),
             ("db", "db.c", "net.h", 0), ("http", "http.c", "db.h", 1),
             ("cli", "main.c", "proxy.h", 0), ("ca", "store.c", "proxy.h", 1)]
    for layer, f, hdr, bad in cases:
        path = tmp_path / "src" / layer / f
        orig = path.read_text()
        path.write_text(orig + f'#include "{hdr}"\n')
        r = run(tmp_path)
        path.write_text(orig)
        assert r.returncode == bad, (layer, hdr, r.stderr)
        if bad:
            assert f"src/{layer}/{f}:" in r.stderr and hdr in r.stderr
