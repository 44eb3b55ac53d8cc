#!/usr/bin/env python3
"""Layering check for src/ (docs/ARCHITECTURE.md): a file may include headers of its own
layer and of the layers below it, never above or beside.

    src/lib  <-  src/net  <-  src/http, src/db  <-  src/proxy, src/ca  <-  src/cli

Quoted includes are resolved the way the build resolves them: the including file's own
directory first, then every src/<layer>/ directory (each is on the include path) and
include/ (the public headers, part of src/lib).  Angle-bracket includes are system or
library headers and are not checked.  Prints one line per offending include and exits 1,
or exits 0 silently.

Usage: scripts/check-layers.py [REPO_ROOT]
"""
import re
import sys
from pathlib import Path

# What each layer may include besides itself.
ALLOWED = {
    "lib": set(),
    "net": {"lib"},
    "http": {"lib", "net"},
    "db": {"lib", "net"},
    "proxy": {"lib", "net", "http", "db"},
    "ca": {"lib", "net", "http", "db"},
    "cli": {"lib", "net", "http", "db", "proxy", "ca"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    src = root / "src"
    unknown = sorted(d.name for d in src.iterdir() if d.is_dir() and d.name not in ALLOWED)
    if unknown:
        print(f"check-layers: src/{unknown[0]}/ is no known layer: add it to ALLOWED in "
              f"scripts/check-layers.py and to docs/ARCHITECTURE.md", file=sys.stderr)
        return 1
    # header name -> layers that hold a header of that name
    owners = {}
    for layer in ALLOWED:
        for h in (src / layer).glob("*.h"):
            owners.setdefault(h.name, set()).add(layer)
    bad = []
    for layer in sorted(ALLOWED):
        for f in sorted((src / layer).glob("*.[ch]")):
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                name = m.group(1)
                if (f.parent / name).exists():
                    continue  # own directory first, as the preprocessor does
                if (root / "include" / name).exists():
                    continue  # public headers belong to src/lib: allowed everywhere
                found = owners.get(Path(name).name, set())
                if found and not (found & ALLOWED[layer]):
                    bad.append(f"{f.relative_to(root)}:{n}: includes \"{name}\" of src/"
                               f"{'/, src/'.join(sorted(found))}/, which src/{layer}/ may not "
                               f"(allowed: {', '.join(sorted(ALLOWED[layer])) or 'nothing'})")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
