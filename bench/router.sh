#!/usr/bin/env bash
# The router against the proxy server, side by side (docs/PERFORMANCE.md "Router"):
#
#   bench/router.sh
#
# Builds meshtls (Release) and the bench tools in build-bench/ like bench/run.sh (no HAProxy
# & co. needed), then runs bench/router.py (which raises its own `ulimit -n` for the idle
# relays).  About 6 minutes on 2 cores.  Knobs (see bench/router.py): BENCH_SECONDS BENCH_REPS BENCH_IDLE
# BENCH_IDLE_REPS BENCH_BULK_MIB BENCH_ROUTER_SERVERS BENCH_ROUTER_FILL BENCH_SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMESHTLS_WERROR=OFF >/dev/null
  cmake --build build-bench -j 2 --target meshtls_bin meshtls >/dev/null
  make -s -C bench OUT=../build-bench/bench MESHTLS_BUILD=../build-bench \
    ../build-bench/bench/loadgen ../build-bench/bench/echo
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" bench/router.py "$@"
