#!/usr/bin/env bash
# One command for the side-by-side benchmark: meshtls proxy server, HAProxy, nginx
# (stream) and stunnel in front of the same echo backend, same certificates.
#   bench/run.sh            (BENCH_SECONDS=5 per measurement by default)
# Results: a Markdown table on stdout and in bench/results-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bench/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target meshtls_bin >/dev/null
mkdir -p build/bench
cc -O2 -Wall -o build/bench/loadgen bench/loadgen.c -lssl -lcrypto -lpthread
cc -O2 -Wall -o build/bench/echo bench/echo.c
exec /usr/bin/python3 bench/run.py "$@"
