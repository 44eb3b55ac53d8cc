"""Where the work goes, counted rather than timed (stable on a noisy machine).

    /usr/bin/python3 bench/profile.py [meshtls|meshtls-nocache|haproxy ...]

For each server (default: meshtls and haproxy) and each workload (full handshakes, resumed
handshakes, 1 KiB request/response), on the same PKI and echo backend as bench/run.py:
  * instructions per operation: the server runs under `valgrind --tool=callgrind`; counters are
    zeroed after a warm-up (callgrind_control -z), the workload runs a fixed count, then
    dumped (callgrind_control -d); the top functions by self cost go to the work dir;
    The rr figure includes the 64 full handshakes that open its connections: subtract
    64 x the full figure (see docs/PERFORMANCE.md);
  * system calls per operation: `strace -c -f -p PID` over the same fixed workload (no valgrind).
Needs bench/run.sh to have built build-bench/ first.  Writes bench/profile-latest.md.
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: PKI, server configs, process handling)

WORK = {  # name: (loadgen mode, options, operations)
    "full": ("full", ["-t", "2", "-n", "300", "-d", "300"], 300),
    "resume": ("resume", ["-t", "2", "-n", "600", "-d", "300"], 600),
    "rr": ("rr", ["-c", "64", "-n", "20000", "-d", "300"], 20000),
}


def annotate(path, n=18):
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)], capture_output=True,
                       text=True, timeout=120)
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", r.stdout) or \
        re.search(r"([\d,]+)\s+PROGRAM TOTALS", r.stdout)
    tot = int(total.group(1).replace(",", "")) if total else 0
    top = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S+)", line)
        if m and "PROGRAM TOTALS" not in line and len(top) < n:
            top.append((m.group(2), m.group(3)))
    return tot, top


def profile(name, d, p, echo_port):
    rows = {}
    # instruction counts
    port = run.free_port()
    argv = run.server_argv(name, d, p, port, echo_port)
    out = d / f"cg.{name}"
    proc = run.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv,
                     stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.vg", "w"))
    try:
        run.wait_port(port, proc, timeout=60)
        run.loadgen("full", port, p, "-t", "1", "-n", "20", "-d", "60")
        for key, (mode, opts, ops) in WORK.items():
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True,
                           timeout=60)
            r = run.loadgen(mode, port, p, *opts)
            subprocess.run(["callgrind_control", "-d", key, str(proc.pid)], capture_output=True,
                           timeout=60)
            time.sleep(1)
            dumps = sorted(Path(d).glob(f"cg.{name}.{proc.pid}.*"), key=os.path.getmtime)
            tot, top = annotate(dumps[-1]) if dumps else (0, [])
            done = int(r.get("ops", 0)) or ops
            rows[key] = {"instr_per_op": tot / done, "top": top, "ops": done,
                         "fails": r.get("fails")}
            (d / f"top.{name}.{key}.txt").write_text(
                "\n".join(f"{pc}% {fn}" for pc, fn in top))
    finally:
        run.stop(proc)
    # system calls
    port = run.free_port()
    proc = run.start(run.server_argv(name, d, p, port, echo_port), stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    try:
        run.wait_port(port, proc)
        for key, (mode, opts, ops) in WORK.items():
            st = run.start(["strace", "-c", "-f", "-p", str(proc.pid), "-o",
                            str(d / f"strace.{name}.{key}")], stderr=subprocess.DEVNULL)
            time.sleep(1)
            r = run.loadgen(mode, port, p, *opts)
            time.sleep(0.5)
            os.kill(st.pid, 2)  # SIGINT: strace detaches and writes its summary
            st.wait(30)
            run.STARTED.remove(st)
            txt = (d / f"strace.{name}.{key}").read_text()
            done = int(r.get("ops", 0)) or ops
            calls = {}
            for line in txt.splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1)) / done
            rows[key]["syscalls_per_op"] = calls
    finally:
        run.stop(proc)
    return rows


def main():
    names = sys.argv[1:] or ["meshtls", "haproxy"]
    d = Path(tempfile.mkdtemp(prefix="meshtls-prof-"))
    try:
        p, _ = run.pki(d)
        echo = run.start([str(run.TOOLS / "echo")], stdout=subprocess.PIPE, text=True)
        echo_port = int(echo.stdout.readline().rsplit(":", 1)[1])
        res = {n: profile(n, d, p, echo_port) for n in names}
        lines = ["| workload | " + " | ".join(f"{n} instr/op | {n} syscalls/op" for n in names) +
                 " |", "| --- |" + " ---: | ---: |" * len(names)]
        for key in WORK:
            cells = []
            for n in names:
                r = res[n][key]
                sc = r.get("syscalls_per_op", {})
                cells.append(f"{r['instr_per_op'] / 1e6:.2f} M")
                cells.append(f"{sum(sc.values()):.1f} (" + ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(sc.items(), key=lambda x: -x[1])[:6]) + ")")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        text = "\n".join(lines) + "\n"
        for n in names:
            for key in WORK:
                text += f"\n{n} {key}: top functions by own instructions\n\n" + "\n".join(
                    f"    {pc}% {fn}" for pc, fn in res[n][key]["top"]) + "\n"
        print(text)
        (run.ROOT / "bench" / "profile-latest.md").write_text(text)
        print(f"(raw callgrind files in {d})", file=sys.stderr)
    finally:
        run.stop_all()


if __name__ == "__main__":
    main()
