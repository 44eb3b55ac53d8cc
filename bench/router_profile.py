"""Where the router's instructions go, against the proxy server's (counted, not timed).

    /usr/bin/python3 bench/router_profile.py [N] [SERVER ...]

SERVER is a name of bench/router.py (default: proxy router router-nolog router-nolog-nocache);
N full mTLS connections (default 300; the routers' with the connect-id line) from 2 client
threads.  Each server runs under `valgrind --tool=callgrind` twice, fresh: with the workload
and with none (start and stop only); the difference divided by N is the instruction count per
connection, in total and per function (own cost).  Prints the totals and, for each router,
the functions whose cost per connection differs most from the proxy server's.  Needs
build-bench/ (bench/run.sh or bench/router.sh).  Writes bench/router-profile-latest.md.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router as rb  # noqa: E402  (bench/router.py: PKI, store, server command lines)
import run as rp  # noqa: E402


INCLUSIVE = ["X509_verify_cert", "cached_verify_cb", "rt_db_lookup", "sqlite3_step",
             "rt_connlog_push", "step_line"]


def own_costs(path):
    """{function: own instructions} and the program total of one callgrind file."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
                         capture_output=True, text=True, timeout=300).stdout
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out) or \
        re.search(r"([\d,]+)\s+PROGRAM TOTALS", out)
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+)(?: \[(\S+)\])?", line)
        if m and "PROGRAM TOTALS" not in line:
            fn = m.group(2).rsplit(":", 1)[-1]
            if fn.startswith("0x"):  # Debian's libcrypto has no symbols for its internals
                fn = f"{Path(m.group(3) or '?').name} (no symbols)"
            costs[fn] = costs.get(fn, 0) + int(m.group(1).replace(",", ""))
    inc = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          str(path)], capture_output=True, text=True, timeout=300).stdout
    for line in inc.splitlines():  # the chain verification, inclusive: what a cache saves
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(\S+) \[", line)
        if m and m.group(2) in INCLUSIVE:
            costs[f"{m.group(2)} (inclusive)"] = int(m.group(1).replace(",", ""))
    return (int(total.group(1).replace(",", "")) if total else 0), costs


def cg_run(name, d, p, echo_port, s, n):
    port = rp.free_port()
    out = d / f"cg.{name}.{n}"
    proc = rp.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] +
                    rb.argv(name, d, p, port, echo_port, s),
                    stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.vg", "a"))
    r = {}
    try:
        rp.wait_port(port, proc, timeout=120)
        if n:
            r = rp.loadgen("full", port, p, "-t", 2, "-n", n, "-d", 600, *rb.line_opts(name),
                           timeout=700)
    finally:
        rp.stop(proc)  # SIGTERM: callgrind writes its file as the server exits
    tot, costs = own_costs(out)
    return tot, costs, r


def main():
    args = sys.argv[1:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 300
    names = args or ["proxy", "router", "router-nolog", "router-nolog-nocache"]
    d = Path(tempfile.mkdtemp(prefix="meshtls-routerprof-"))
    try:
        p = rb.pki(d)
        echo = rp.start([str(rp.TOOLS / "echo")], stdout=subprocess.PIPE, text=True)
        echo_port = int(echo.stdout.readline().rsplit(":", 1)[1])
        s, _ = rb.store(d, echo_port)
        per, fns = {}, {}
        for name in names:
            rp.log(f"== {name}")
            t0, c0, _ = cg_run(name, d, p, echo_port, s, 0)
            t1, c1, r = cg_run(name, d, p, echo_port, s, n)
            done = int(r.get("ops", 0)) or n
            if int(r.get("fails", 0)):
                rp.log(f"   {r.get('fails')} connection(s) failed")
            per[name] = (t1 - t0) / done
            fns[name] = {f: (c1.get(f, 0) - c0.get(f, 0)) / done for f in set(c0) | set(c1)}
            rp.log(f"   {per[name] / 1e6:.3f} M instructions per connection")
        text = ("| server | instructions per connection | / proxy |\n| --- | ---: | ---: |\n" +
                "".join(f"| {x} | {per[x] / 1e6:.3f} M | "
                        f"{per[x] / per['proxy'] if 'proxy' in per else float('nan'):.2f} |\n"
                        for x in names))
        for name in names:
            if name == "proxy" or "proxy" not in fns:
                continue
            delta = {f: fns[name].get(f, 0) - fns["proxy"].get(f, 0)
                     for f in set(fns[name]) | set(fns["proxy"])}
            top = sorted(delta.items(), key=lambda x: -abs(x[1]))[:25]
            text += (f"\n{name} minus proxy, own instructions per connection (K), the 25 "
                     "largest differences:\n\n" + "\n".join(
                         f"    {v / 1e3:+9.1f} K  {f}" for f, v in top) + "\n")
        print(text)
        (rp.ROOT / "bench" / "router-profile-latest.md").write_text(text)
        rp.log(f"(raw callgrind files in {d})")
    finally:
        rp.stop_all()


if __name__ == "__main__":
    main()
