#!/usr/bin/env bash
# Benchmark-only dependencies (Debian packages): the servers meshtls is compared with.
# Idempotent; not needed for `make test`.
set -euo pipefail
PKGS=(haproxy stunnel4 nginx libnginx-mod-stream)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then

  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts the packaged services; the benchmark runs its own instances.
for svc in haproxy nginx stunnel4; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
