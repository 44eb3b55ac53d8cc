"""Where the work goes, counted rather than timed (stable on a noisy machine).

    /usr/bin/python3 bench/profile.py [meshtls|meshtls-nocache|haproxy ...]

For each server (default: meshtls and haproxy) and each workload (full handshakes, resumed
handshakes, 1 KiB request/response), on the same PKI and echo backend as bench/run.py:
  * instructions per operation: a fresh server under `valgrind --tool=callgrind` for the whole
    run of each workload (a fixed count), minus a run with no workload, divided by the count;
    the rr figure has the 64 full handshakes that open its connections taken out.  Also the
    top functions by own cost and the inclusive cost of the main parts of a handshake;
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


# Exported functions whose inclusive cost says where a handshake goes (OpenSSL's internal
# functions have no symbols in Debian's packages, so exported callers stand for them).
PARTS = ["SSL_do_handshake", "d2i_X509", "OSSL_DECODER_CTX_new_for_pkey", "X509_verify_cert",
         "EVP_DigestVerify", "EVP_DigestSign", "EVP_PKEY_generate", "EVP_PKEY_derive",
         "EVP_KDF_derive", "SSL_read_ex", "SSL_write_ex", "meshtls_identity_from_x509",
         "step_relay", "malloc", "free"]


def annotate(path, n=18):
    """Program total, the top functions by own cost, and the inclusive cost of PARTS."""
    own = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)],
                         capture_output=True, text=True, timeout=300).stdout
    inc = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(path)],
                         capture_output=True, text=True, timeout=300).stdout
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", own) or \
        re.search(r"([\d,]+)\s+PROGRAM TOTALS", own)
    tot = int(total.group(1).replace(",", "")) if total else 0
    top, parts = [], {}
    for line in own.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S+)", line)
        if m and "PROGRAM TOTALS" not in line and len(top) < n:
            top.append((m.group(2), m.group(3)))
    for line in inc.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(\S+) \[", line)
        if m and m.group(2) in PARTS and m.group(2) not in parts:
            parts[m.group(2)] = int(m.group(1).replace(",", ""))
    return tot, top, parts


def callgrind_run(name, d, p, echo_port, key):
    """One fresh server under callgrind for the whole run of workload `key` (or none)."""
    port = run.free_port()
    out = d / f"cg.{name}.{key}"
    proc = run.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] +
                     run.server_argv(name, d, p, port, echo_port),
                     stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.vg", "a"))
    r = {}
    try:
        run.wait_port(port, proc, timeout=60)
        if key != "idle":
            mode, opts, _ = WORK[key]
            r = run.loadgen(mode, port, p, *opts)
    finally:
        run.stop(proc)  # SIGTERM: callgrind writes its file as the server exits
    return annotate(out), r


def profile(name, d, p, echo_port):
    rows = {}
    # Instruction counts: whole runs (start-up + workload + exit) minus a run with no workload,
    # divided by the operations; the rr run also holds the 64 full handshakes that open its
    # connections, which are taken out with the full figure.  callgrind_control dumps of a
    # running server were tried first; callgrind_annotate charged all their cost to clone().
    (base, _, base_parts), _ = callgrind_run(name, d, p, echo_port, "idle")
    for key in WORK:
        (tot, top, parts), r = callgrind_run(name, d, p, echo_port, key)
        done = int(r.get("ops", 0)) or WORK[key][2]
        per = (tot - base) / done
        per_parts = {k: (v - base_parts.get(k, 0)) / done for k, v in parts.items()}
        if key == "rr" and "full" in rows:
            per -= 64 * rows["full"]["instr_per_op"] / done
        rows[key] = {"instr_per_op": per, "top": top, "ops": done, "fails": r.get("fails"),
                     "parts": per_parts}
        (d / f"top.{name}.{key}.txt").write_text("\n".join(f"{pc}% {fn}" for pc, fn in top))
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
                parts = res[n][key].get("parts", {})
                text += (f"\n{n} {key}: inclusive instructions per operation of the main parts "
                         "(nested: a part includes the parts it calls)\n\n" + "\n".join(
                             f"    {parts[k] / 1e3:9.0f} K  {k}" for k in PARTS if k in parts) +
                         "\n")
                text += f"\n{n} {key}: top functions by own instructions\n\n" + "\n".join(
                    f"    {pc}% {fn}" for pc, fn in res[n][key]["top"]) + "\n"
        print(text)
        (run.ROOT / "bench" / "profile-latest.md").write_text(text)
        print(f"(raw callgrind files in {d})", file=sys.stderr)
    finally:
        run.stop_all()


if __name__ == "__main__":
    main()
