#!/usr/bin/env bash
# The demo behind `make demo-router`: the mTLS router (docs/ROUTER.md) from an empty SQLite
# database: a CA with user certificates, a host and a grant made with `meshtls router`, the
# router, then `ssh` through `meshtls connect` when an sshd is installed (else a plain TCP
# echo service as the host), and a refusal for a user of another organisation.
#
# Runs from the repository root after `make build`.  Everything lives in a temporary
# directory removed on exit; it stops only the processes it started, by PID.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${MESHTLS_BUILD_DIR:-build}
MESHTLS=$(realpath "${MESHTLS_BIN:-$BUILD/meshtls}")
TD=demo.local
[[ -x $MESHTLS ]] || { echo "demo: $MESHTLS is missing: run 'make build' first" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshtls-router-demo.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a CA, the router's certificate, two user certificates (meshtls ca)"
"$MESHTLS" ca init --dir "$WORK/ca" --trust-domain $TD >/dev/null
"$MESHTLS" ca register --dir "$WORK/ca" router --dns localhost --ip 127.0.0.1 >/dev/null
"$MESHTLS" ca register --dir "$WORK/ca" alice --spiffe-id spiffe://$TD/orgs/acme/users/alice >/dev/null
"$MESHTLS" ca register --dir "$WORK/ca" mallory --spiffe-id spiffe://$TD/orgs/evil/users/mallory >/dev/null
for n in router alice mallory; do "$MESHTLS" ca issue --dir "$WORK/ca" $n --out "$WORK/certs" >/dev/null; done
echo "alice:   spiffe://$TD/orgs/acme/users/alice"
echo "mallory: spiffe://$TD/orgs/evil/users/mallory"

HOST_PORT=$(free_port)
if [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null; then
    MODE=ssh
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/user_key"
    cp "$WORK/user_key.pub" "$WORK/authorized_keys"
    /usr/sbin/sshd -D -e -p "$HOST_PORT" -o ListenAddress=127.0.0.1 -h "$WORK/host_key" \
        -o AuthorizedKeysFile="$WORK/authorized_keys" -o StrictModes=no \
        -o PasswordAuthentication=no -o PidFile="$WORK/sshd.pid" 2>"$WORK/sshd.log" &
    PIDS+=($!)
else
    MODE=echo
    echo "(no /usr/sbin/sshd: the host is a TCP echo service; install openssh-server for ssh)"
    python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
def serve(c):
    while (d := c.recv(65536)): c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
' "$HOST_PORT" &
    PIDS+=($!)
fi

for _ in $(seq 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$HOST_PORT" 2>/dev/null && break
    sleep 0.1
done

step "the data: host box of organisation acme, granted to alice (meshtls router)"
S="sqlite:$WORK/router.db"
"$MESHTLS" router --store "$S" hosts add box --org acme --addr "127.0.0.1:$HOST_PORT"
"$MESHTLS" router --store "$S" grant box --user alice
"$MESHTLS" router --store "$S" list

step "the router"
"$MESHTLS" proxy router --listen 127.0.0.1:0 --cert "$WORK/certs/router.crt" \
    --key "$WORK/certs/router.key" --cacert "$WORK/certs/ca.crt" --issuer $TD \
    --store "$S" >"$WORK/router.out" 2>"$WORK/router.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening on' "$WORK/router.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$WORK/router.out")
[[ -n $PORT ]] || { cat "$WORK/router.log"; exit 1; }
echo "listening on 127.0.0.1:$PORT"

C="$WORK/certs"
step "alice reaches box"
if [[ $MODE == ssh ]]; then
    PC="$MESHTLS connect --proxy localhost:$PORT --cert $C/alice.crt --key $C/alice.key --cacert $C/ca.crt --connect-id %h"
    ssh -F /dev/null -i "$WORK/user_key" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile="$WORK/kh" -o ProxyCommand="$PC" "$(id -un)@box" \
        'echo "hello from $(hostname) over ssh through the router"'
else
    echo "hello through the router" | "$MESHTLS" connect --proxy "localhost:$PORT" \
        --cert "$C/alice.crt" --key "$C/alice.key" --cacert "$C/ca.crt" --connect-id box
fi

step "mallory (another organisation) is refused, as if box did not exist"
if "$MESHTLS" connect --proxy "localhost:$PORT" --cert "$C/mallory.crt" --key "$C/mallory.key" \
    --cacert "$C/ca.crt" --connect-id box </dev/null; then
    echo "demo: mallory was let in" >&2; exit 1
fi
"$MESHTLS" router --store "$S" connections
echo; echo "demo: ok"
