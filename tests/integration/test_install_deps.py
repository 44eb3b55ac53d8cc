"""scripts/install-deps.sh installs every tool the demo scripts check for before they start
(`for tool in …; do command -v "$tool" …`): `make demo` on a fresh Debian 12 must not stop at
"jq is not installed".  Checked statically against the package list, and each tool's package is
looked up with dpkg where the tool is installed (a tool whose package is named differently)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import SOURCE_DIR

SCRIPTS = SOURCE_DIR / "scripts"


def packages():
    text = (SCRIPTS / "install-deps.sh").read_text()
    m = re.search(r"^PKGS=\((.*?)^\)", text, re.S | re.M)
    assert m, "install-deps.sh: no PKGS=( … ) list"
    return set(m.group(1).split())


def required_tools():
    """{tool: script} for every `for tool in A B C; do` loop in scripts/*.sh."""
    tools = {}
    for script in sorted(SCRIPTS.glob("*.sh")):
        for m in re.finditer(r"^\s*for tool in ([^;]+); do", script.read_text(), re.M):
            for tool in m.group(1).split():
                tools[tool] = script.name
    return tools


def package_of(tool):
    """The Debian package that ships `tool` if it is installed here, else the tool's name."""
    path = shutil.which(tool)
    if path and shutil.which("dpkg-query"):
        for p in (path, str(Path(path).resolve())):
            r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True,
                               timeout=30)
            if r.returncode == 0:
                return r.stdout.split(":", 1)[0].strip()
    return tool


def test_every_tool_a_demo_checks_for_is_installed_by_install_deps():
    pkgs = packages()
    tools = required_tools()
    assert "jq" in tools, tools  # scripts/demo-control-plane.sh
    missing = {t: s for t, s in tools.items() if t not in pkgs and package_of(t) not in pkgs}
    assert not missing, f"add to PKGS in scripts/install-deps.sh: {missing}"


def test_install_deps_is_idempotent_when_everything_is_present():
    # every package present (this machine ran it): exit 0 at once, no apt call, no output
    pkgs = packages()
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *sorted(pkgs)],
                       capture_output=True, text=True, timeout=60)
    installed = {l.split()[0] for l in r.stdout.splitlines() if l.endswith("install ok installed")}
    if installed != pkgs:
        pytest.skip(f"not installed here: {sorted(pkgs - installed)}")
    r = subprocess.run(["bash", str(SCRIPTS / "install-deps.sh")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
