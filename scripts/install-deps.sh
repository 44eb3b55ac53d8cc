#!/usr/bin/env bash
# Install every build and test dependency of meshtls from Debian 12 packages.
# Idempotent: packages already present are not reinstalled, and apt is only
# called when something is missing. Used by `make`, `make test` and `make demo`.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libssl-dev openssl libmimalloc-dev libsqlite3-dev sqlite3 libyaml-dev libcmocka-dev
  libjansson-dev libhttp-parser-dev libpq-dev
  python3 python3-pytest python3-cryptography python3-grpcio
  postgresql postgresql-client redis-server redis-tools curl jq
  openssh-server openssh-client faketime
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts the packaged servers; the tests start their own on loopback.
for svc in postgresql redis-server ssh; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
