#!/usr/bin/env bash
# Benchmark-only dependencies (Debian packages): the servers meshtls is compared with (HAProxy,
# nginx, stunnel for bench/run.sh; cfssl and openssl's ocsp responder for bench/ca-run.sh), and
# the compiler/OpenSSL headers for bench/loadgen.c.  Idempotent; not part of the test dependencies.
# Debian starts the packaged nginx/haproxy services on install; the benchmark runs its own
# instances from its own config files on free loopback ports, so the packaged services are
# stopped and disabled (via systemctl where there is a systemd, else via the package's own
# init script).  No other process is touched.
set -euo pipefail
PKGS=(haproxy stunnel4 nginx libnginx-mod-stream golang-cfssl openssl sqlite3 libssl-dev gcc make cmake python3)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/install-deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d 101: do not start services on install (where we may create it: a root
  # container without one); removed again right after.
  made_policy=0
  if [ -z "$SUDO" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "${status:-0}" = 0 ] || exit "$status"
fi
for svc in haproxy nginx stunnel4; do
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$svc" ]; then
    $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
  fi
done
for b in haproxy nginx stunnel4 cfssl openssl sqlite3; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "bench/install-deps.sh: $b missing" >&2; exit 1; }
done
