#!/usr/bin/env bash
# The control plane's benchmark in one command (docs/PERFORMANCE.md, "The control plane"):
#
#   bench/ca-run.sh
#
# meshtls ca serve side by side with cfssl serve (golang-cfssl: the same CA key and CSR) and
# openssl ocsp -index -port (the same certificate and intermediate), one run; prints a Markdown
# table with the ratios and writes bench/ca-serve-results-latest.md (+ .json).  About a minute.
# Knobs (see bench/ca_serve.py): BENCH_SECONDS=3 BENCH_THREADS=4 BENCH_TOKENS=300
#   BENCH_OTHERS=0 (meshtls only) BENCH_SKIP_DEPS=1 BENCH_SKIP_BUILD=1 BENCH_SCALE=1|only
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BENCH_SKIP_DEPS:-0}" != 1 ]; then
  bench/install-deps.sh
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMESHTLS_WERROR=OFF >/dev/null
  cmake --build build-bench -j "$(nproc)" --target meshtls_bin >/dev/null
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export MESHTLS_BIN="${MESHTLS_BIN:-$PWD/build-bench/meshtls}"
# BENCH_SCALE=only: bench/ca_scale.py alone (start-up and revoke on a 1,000,000-row store,
# issuance on SQLite against PostgreSQL; ~15 minutes, 1.2 GB in /tmp); BENCH_SCALE=1: after
# ca_serve.py.  Its knobs are at the top of bench/ca_scale.py.
if [ "${BENCH_SCALE:-0}" != only ]; then
  "$PY" bench/ca_serve.py "$@"
fi
if [ "${BENCH_SCALE:-0}" != 0 ]; then
  "$PY" bench/ca_scale.py
fi
