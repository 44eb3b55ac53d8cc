#!/usr/bin/env bash
# Banned functions (curl's checksrc, HAProxy's coding style): unbounded string
# writes and unchecked number parsing.  Exits 1 and names the line on a hit.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\('
if hits=$(git ls-files -co --exclude-standard 'src/*.c' 'src/*.h' 'include/*.h' 'examples/*.c' \
          | xargs -r grep -nE "$pattern" ); then
  echo "checksrc: banned function used (use snprintf / strtoll with checks):" >&2
  echo "$hits" >&2
  exit 1
fi
# Numbers: one strict parser (src/lib/parse.c); raw strtol and friends accept " 12", "+12"
# and "12abc" unless every caller checks by hand.
if hits=$(git ls-files -co --exclude-standard 'src/*.c' 'src/*.h' 'include/*.h' \
          | grep -v '^src/lib/parse\.c$' \
          | xargs -r grep -nE '\bstrto(l|ul|ll|ull|d|f|imax|umax)\s*\(' ); then
  echo "checksrc: raw number parsing (use mt_parse_i64 / mt_parse_duration_ms, src/lib/parse.h):" >&2
  echo "$hits" >&2
  exit 1
fi
# Formatting: the checked-in .clang-format, over every tracked C file.
if ! command -v clang-format >/dev/null; then
  echo "checksrc: clang-format missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
if ! git ls-files -co --exclude-standard '*.c' '*.h' | xargs -r clang-format --dry-run -Werror 2>/tmp/checksrc-format.$$; then
  head -40 /tmp/checksrc-format.$$ >&2
  rm -f /tmp/checksrc-format.$$
  echo "checksrc: files deviate from .clang-format: run 'make format'" >&2
  exit 1
fi
rm -f /tmp/checksrc-format.$$
# Layers: src/lib <- src/net <- src/http, src/db <- src/proxy, src/ca <- src/cli
# (docs/ARCHITECTURE.md); the checker is ours, in the repository, so CI enforces it.
if ! python3 scripts/check-layers.py .; then
  echo "checksrc: an include goes against the layering (docs/ARCHITECTURE.md)" >&2
  exit 1
fi
echo "checksrc: ok"
