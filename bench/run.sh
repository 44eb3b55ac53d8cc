#!/usr/bin/env bash
# The side-by-side benchmark in one command (docs/PERFORMANCE.md):
#
#   bench/run.sh
#
# meshtls proxy server, HAProxy, nginx (stream) and stunnel, one worker/thread each, in front
# of the same plaintext echo backend, with the same ECDSA P-256 certificates (leaf +
# intermediate), TLS 1.3 and a required client certificate; then the in-memory floor tool.
# Prints Markdown tables and writes bench/results-latest.md (+ .json with every round).
# About 8 minutes on 2 cores.  Longer, steadier runs: BENCH_SECONDS=10 BENCH_REPS=5 bench/run.sh
# Other knobs (see bench/run.py): BENCH_IDLE=1000,9000 BENCH_BULK_MIB=1024
#   BENCH_SERVERS=meshtls,haproxy BENCH_FLOOR=0 BENCH_SKIP_DEPS=1 BENCH_SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BENCH_SKIP_DEPS:-0}" != 1 ]; then
  bench/install-deps.sh
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMESHTLS_WERROR=OFF >/dev/null
  cmake --build build-bench -j "$(nproc)" --target meshtls_bin meshtls >/dev/null
  make -s -C bench OUT=../build-bench/bench MESHTLS_BUILD=../build-bench
fi

# 9,000 idle connections need ~18,000 descriptors in the proxy (client + backend side).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard" 2>/dev/null || true

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" bench/run.py "$@"
