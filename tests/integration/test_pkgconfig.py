"""libmeshtls installs as a normal library: `cmake --install` puts the
headers, the shared and static libraries and meshtls.pc in a prefix, and a
program compiled with `pkg-config --cflags --libs meshtls` builds and runs."""
import os
import subprocess

from conftest import BUILD_DIR, SOURCE_DIR


def test_install_and_build_with_pkg_config(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD_DIR), "--prefix", str(prefix)], check=True,
                   capture_output=True, timeout=120)
    pcdir = next(prefix.rglob("meshtls.pc")).parent
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "meshtls"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert any(f.startswith("-I") for f in flags) and "-lmeshtls" in flags
    src = tmp_path / "prog.c"
    src.write_text('#include <meshtls/meshtls.h>\n#include <stdio.h>\n#include <string.h>\n'
                   'int main(void) {\n'
                   '  struct meshtls_spiffe_id id; struct meshtls_err e = MESHTLS_ERR_INIT;\n'
                   '  const char *s = "spiffe://example.org/svc/api";\n'
                   '  if (meshtls_spiffe_parse(s, strlen(s), &id, &e)) return 1;\n'
                   '  printf("%s %s\\n", id.trust_domain, id.path);\n'
                   '  return meshtls_spiffe_parse("x", 1, &id, &e) == MESHTLS_EINVAL ? 0 : 1;\n'
                   '}\n')
    exe = tmp_path / "prog"
    cache = (BUILD_DIR / "CMakeCache.txt").read_text()
    san = ["-fsanitize=address,undefined"] if "MESHTLS_SANITIZE:BOOL=ON" in cache else []
    subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", *san, str(src), "-o", str(exe), *flags,
                    f"-Wl,-rpath,{prefix}/lib", f"-Wl,-rpath,{pcdir.parent}"],
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30)
    assert out.stdout == "example.org /svc/api\n"


def _install(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD_DIR), "--prefix", str(prefix)], check=True,
                   capture_output=True, timeout=120)
    pcdir = next(prefix.rglob("meshtls.pc")).parent
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "meshtls"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    cache = (BUILD_DIR / "CMakeCache.txt").read_text()
    san = ["-fsanitize=address,undefined"] if "MESHTLS_SANITIZE:BOOL=ON" in cache else []
    return prefix, pcdir, flags, san


def test_readme_snippet_compiles_as_shown(tmp_path):
    """The C snippet of the README, exactly as printed, against an installed copy."""
    readme = (SOURCE_DIR / "README.md").read_text()
    start = readme.index("## The library in a few lines")
    block = readme[readme.index("```c\n", start) + 5:]
    block = block[:block.index("```\n")]
    assert "int serve_one(int fd)" in block
    prefix, pcdir, flags, san = _install(tmp_path)
    src = tmp_path / "snippet.c"
    src.write_text(block)
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", *san, "-c", str(src),
                        "-o", str(tmp_path / "snippet.o"), *flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_examples_build_against_the_installed_copy(tmp_path):
    prefix, pcdir, flags, san = _install(tmp_path)
    for name in ("mtls_server", "mtls_client"):
        exe = tmp_path / name
        r = subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", *san,
                            str(SOURCE_DIR / "examples" / f"{name}.c"), "-o", str(exe), *flags,
                            f"-Wl,-rpath,{pcdir.parent}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # it loads the installed library and runs (an unknown option: it exits at once)
        out = subprocess.run([str(exe), "--no-such-option"], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode != 127 and "error while loading" not in out.stderr, out
