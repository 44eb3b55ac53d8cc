"""Where the router's instructions go, against the proxy server's (counted, not timed).

    /usr/bin/python3 bench/router_profile.py [N] [SERVER ...]
    /usr/bin/python3 bench/router_profile.py strace [SERVER ...]

SERVER is a name of bench/router.py (default: proxy router router-nolog router-nolog-nocache).
Workloads: N full mTLS connections (default 300; the routers' with the connect-id line) from
2 client threads, and one bulk transfer each way of BENCH_PROFILE_BULK_MIB MiB (default 64).
Each server runs under `valgrind --tool=callgrind` fresh for each workload and once with none
(start and stop only); the difference divided by the connections (or GB) is the instruction
count per connection (per GB), in total and per function (own cost; Debian's libcrypto has
no symbols for its internals, so those are summed per library).  Prints the totals and, for
each router, the functions whose cost differs most from the proxy server's.  User space
only: the kernel's share (system calls, fsync) is not counted here; the `strace` form counts
system calls per connection instead (`strace -c -f` on each server, no valgrind, over 500
resumed connections from 2 threads after 50 warm-up ones).  Needs
build-bench/ (bench/run.sh or bench/router.sh).  Writes bench/router-profile-latest.md.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router as rb  # noqa: E402  (bench/router.py: PKI, store, server command lines)
import run as rp  # noqa: E402


BULK_MIB = int(os.environ.get("BENCH_PROFILE_BULK_MIB", "64"))
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


def cg_run(name, d, p, echo_port, s, work):
    """A fresh server under callgrind: `work` is ("full", N), ("bulk", MIB) or None."""
    port = rp.free_port()
    out = d / f"cg.{name}.{work[0] if work else 'none'}"
    proc = rp.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] +
                    rb.argv(name, d, p, port, echo_port, s),
                    stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.vg", "a"))
    done, fails = 0, 0
    try:
        rp.wait_port(port, proc, timeout=120)
        if work and work[0] == "full":
            r = rp.loadgen("full", port, p, "-t", 2, "-n", work[1], "-d", 600,
                           *rb.line_opts(name), timeout=700)
            done, fails = int(r["ops"]), int(r["fails"])
        elif work:
            for mode in ("up", "down"):
                r = rp.loadgen(mode, port, p, "-m", work[1], "-d", 600, *rb.line_opts(name),
                               timeout=700)
                done += int(r["bytes"])
                fails += int(r["fails"]) + (1 - int(r["complete"]))
    finally:
        rp.stop(proc)  # SIGTERM: callgrind writes its file as the server exits
    if fails:
        rp.log(f"   {name} {work}: {fails} failure(s)")
    tot, costs = own_costs(out)
    return tot, costs, done


def syscalls(names):
    """`strace -c` per server over a fixed number of resumed connections."""
    d = Path(tempfile.mkdtemp(prefix="meshtls-routerstrace-"))
    try:
        p, _, echo_port, s, _ = rb.setup(d)
        text = ""
        for name in names:
            proc, port = rb.launch(name, d, p, echo_port, s)
            try:
                rp.loadgen("full", port, p, "-t", 2, "-n", 50, "-d", 20, *rb.line_opts(name))
                st = rp.start(["strace", "-c", "-f", "-p", str(proc.pid), "-o",
                               str(d / f"strace.{name}")], stderr=subprocess.DEVNULL)
                time.sleep(1)  # attached to every thread
                r = rp.loadgen("resume", port, p, "-t", 2, "-n", 500, "-d", 60,
                               *rb.line_opts(name))
                time.sleep(1)  # the connection log's last batch
                os.kill(st.pid, signal.SIGINT)  # strace detaches and writes its summary
                st.wait(30)
                rp.STARTED.remove(st)
            finally:
                rp.stop(proc)
            done = int(r.get("ops", 0)) or 500
            calls = {}
            for line in (d / f"strace.{name}").read_text().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1)) / done
            text += (f"{name}: {sum(calls.values()):.1f} system calls per resumed connection: " +
                     ", ".join(f"{k} {v:.2f}" for k, v in
                               sorted(calls.items(), key=lambda x: -x[1])) + "\n\n")
        print(text)
    finally:
        rp.stop_all()


def main():
    args = sys.argv[1:]
    if args and args[0] == "strace":
        syscalls(args[1:] or ["proxy", "router", "router-nolog"])
        return
    n = int(args.pop(0)) if args and args[0].isdigit() else 300
    names = args or ["proxy", "router", "router-nolog", "router-nolog-nocache"]
    d = Path(tempfile.mkdtemp(prefix="meshtls-routerprof-"))
    try:
        p, _, echo_port, s, _ = rb.setup(d)
        per, fns = {"full": {}, "bulk": {}}, {"full": {}, "bulk": {}}
        for name in names:
            rp.log(f"== {name}")
            t0, c0, _ = cg_run(name, d, p, echo_port, s, None)
            for key, amount, unit in (("full", n, 1), ("bulk", BULK_MIB, 1e9)):
                t1, c1, done = cg_run(name, d, p, echo_port, s, (key, amount))
                done = (done or 1) / unit  # connections, or GB both ways together
                per[key][name] = (t1 - t0) / done
                fns[key][name] = {f: (c1.get(f, 0) - c0.get(f, 0)) / done
                                  for f in set(c0) | set(c1)}
                rp.log(f"   {key}: {per[key][name] / 1e6:.3f} M instructions per "
                       f"{'connection' if key == 'full' else 'GB'}")
        text = ("| server | instructions per full connection | / proxy | instructions per GB "
                "of bulk (both ways) | / proxy |\n| --- | ---: | ---: | ---: | ---: |\n")
        for x in names:
            cells = []
            for key in ("full", "bulk"):
                base = per[key].get("proxy")
                cells += [f"{per[key][x] / 1e6:.3f} M",
                          f"{per[key][x] / base:.2f}" if base else "–"]
            text += f"| {x} | " + " | ".join(cells) + " |\n"
        for key, unit in (("full", "per connection"), ("bulk", "per GB")):
            for name in names:
                if name == "proxy" or "proxy" not in fns[key]:
                    continue
                a, b = fns[key][name], fns[key]["proxy"]
                delta = {f: a.get(f, 0) - b.get(f, 0) for f in set(a) | set(b)}
                top = sorted(delta.items(), key=lambda x: -abs(x[1]))[:15]
                text += (f"\n{name} minus proxy, {key}: instructions {unit} (K), the 15 "
                         "largest differences (own cost unless marked inclusive):\n\n" +
                         "\n".join(f"    {v / 1e3:+11.1f} K  {f}" for f, v in top) + "\n")
        print(text)
        (rp.ROOT / "bench" / "router-profile-latest.md").write_text(text)
        rp.log(f"(raw callgrind files in {d})")
    finally:
        rp.stop_all()


if __name__ == "__main__":
    main()
