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
echo "checksrc: ok"
