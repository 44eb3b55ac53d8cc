#!/usr/bin/env bash
# The demo behind `make demo`: a throwaway PKI, two services, one mutual TLS
# connection that succeeds with a trusted identity and one that is refused
# because its certificate comes from a CA nobody trusts.
#
# Runs from the repository root after `make build` (binaries in build/).
# Everything lives in a temporary directory that is removed on exit; the only
# process it stops is the example server it started.  Exit status 0 means
# both outcomes were as expected.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${MESHTLS_BUILD_DIR:-build}
MESHTLS=${MESHTLS_BIN:-$BUILD/meshtls}
SERVER=$BUILD/mtls_server
TD=demo.local

if [[ -t 1 ]]; then
    B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'
else
    B='' G='' R='' D='' N=''
fi

die() { echo "${R}demo: $*${N}" >&2; exit 1; }

for f in "$MESHTLS" "$SERVER"; do
    [[ -x $f ]] || die "$f is missing: run 'make build' first (or just 'make demo')"
done
for tool in curl openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed: run scripts/install-deps.sh"
done
MESHTLS=$(realpath "$MESHTLS")
SERVER=$(realpath "$SERVER")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshtls-demo.XXXXXX")
SERVER_PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== Step %d: %s%s\n' "$B" "$STEP" "$1" "$N"; }
# say TEXT...: one paragraph of explanation, wrapped and indented
say() { fold -s -w 76 <<<"$*" | sed 's/ *$//; s/^/   /'; }
# show CMD...: print the command (paths relative to the demo directory), run it, indent its output
cmdline() {
    local shown=${*//$WORK\//}
    shown=${shown//$MESHTLS/meshtls}
    printf '   %s$ %s%s\n' "$D" "${shown//$SERVER/mtls_server}" "$N"
}
show() {
    cmdline "$@"
    "$@" 2>&1 | sed "s|$WORK/||g; s/^/     /"
    return "${PIPESTATUS[0]}"
}
ok() { printf '   %s✔ %s%s\n' "$G" "$1" "$N"; }
bad() { printf '   %s✘ %s%s\n' "$R" "$1" "$N"; }

# wait_for FILE TEXT: wait up to 10 seconds for TEXT to appear in FILE
wait_for() {
    for _ in $(seq 100); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

cd "$WORK"

printf '%smeshtls demo: mutual TLS between two services, "orders" calling "billing"%s\n' "$B" "$N"
say "In mutual TLS both ends of a connection show a certificate and check the other's" \
    "before any data moves. A certificate carries an identity, here a SPIFFE ID such as" \
    "spiffe://$TD/svc/orders, and is only believed if it was signed by a CA we trust." \
    "Working directory (deleted at the end): $WORK"

step "create a certificate authority (CA) for the trust domain $TD"
show "$MESHTLS" ca init --dir "$WORK/ca" --trust-domain "$TD"
say "The root CA signs only the intermediate CA; the intermediate signs the services'" \
    "short-lived certificates. Everything the CA knows (registered services, issued" \
    "certificates, revocations, an audit log) is kept in one SQLite file, ca/meshtls.db." \
    "ca/ca.crt is the trust bundle every service is given."

step "register the two services the CA may issue certificates for"
show "$MESHTLS" ca register --dir "$WORK/ca" billing --dns localhost --ip 127.0.0.1
show "$MESHTLS" ca register --dir "$WORK/ca" orders
say "Only registered services get certificates. billing is a server, so its certificate" \
    "also names the address clients dial (localhost, 127.0.0.1)."

step "issue a certificate and a private key to each service"
show "$MESHTLS" ca issue --dir "$WORK/ca" billing --out "$WORK/billing"
show "$MESHTLS" ca issue --dir "$WORK/ca" orders --out "$WORK/orders"
show "$MESHTLS" cert inspect "$WORK/orders/orders.crt"

step "the CA's inventory"
show "$MESHTLS" ca list --dir "$WORK/ca"

step "start the billing service (examples/mtls_server, a small mTLS server)"
SERVE=("$SERVER" --cert billing/billing.crt --key billing/billing.key --cacert billing/ca.crt
       --port 0)
cmdline "${SERVE[@]}"
"${SERVE[@]}" >server.out 2>server.log &
SERVER_PID=$!
wait_for server.out "listening on" || die "the server did not start: $(cat server.log)"
PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' server.out)
[[ -n $PORT ]] || die "could not read the server's port from: $(cat server.out)"
sed 's/^/     /' server.out
say "billing now accepts TLS 1.3 connections on 127.0.0.1:$PORT, and only from clients" \
    "that present a certificate signed by the $TD CA."

FAILED=0

step "orders calls billing with its own certificate"
if resp=$(show curl -sS --max-time 10 --cert orders/orders.crt --key orders/orders.key \
          --cacert orders/ca.crt "https://127.0.0.1:$PORT/") && \
   [[ $resp == *"hello spiffe://$TD/svc/orders"* ]] && \
   wait_for server.log "accepted client spiffe://$TD/svc/orders"; then
    echo "$resp"
    printf '   %sbilling logged:%s\n' "$D" "$N"
    grep "accepted client" server.log | sed 's/^/     /'
    ok "orders → billing: mutual TLS handshake succeeded; billing saw the caller as spiffe://$TD/svc/orders"
    say "orders checked billing's certificate against ca.crt (and that it was issued for" \
        "127.0.0.1); billing checked orders' certificate the same way and read the caller's" \
        "identity from it. No password or token was needed."
else
    echo "$resp"
    sed 's/^/     /' server.log
    bad "orders → billing should have succeeded"
    FAILED=1
fi

step "an intruder calls billing with a certificate from a CA billing does not trust"
show "$MESHTLS" dev --out "$WORK/intruder" orders
say "meshtls dev made a second, unrelated CA (trust domain dev.local) and a certificate" \
    "that is also named \"orders\". Same name, different signer."
say "This time the client is openssl s_client, which shows the TLS alert billing sends."
S_CLIENT=(openssl s_client -connect "127.0.0.1:$PORT" -quiet -cert intruder/orders.crt
          -cert_chain intruder/orders.crt -key intruder/orders.key -CAfile billing/ca.crt)
cmdline "${S_CLIENT[@]}"
if timeout 20 "${S_CLIENT[@]}" </dev/null >s_client.out 2>&1; then
    grep -v '^depth=\|^verify return' s_client.out || true
    bad "billing accepted a certificate from an untrusted CA"
    FAILED=1
else
    alert=$(grep -o 'alert [a-z ]*' s_client.out | head -1 || true)
    printf '     openssl s_client: handshake ended by billing with TLS "%s"\n' "${alert:-no alert}"
    if [[ $alert == "alert unknown ca" ]] &&
       wait_for server.log "unable to get local issuer certificate"; then
        printf '   %sbilling logged:%s\n' "$D" "$N"
        grep "unable to get local issuer" server.log | sed 's/^/     /'
        ok "intruder → billing: refused during the handshake; billing does not trust the CA that signed the certificate, so no request reached it"
        say "\"unknown ca\" / \"unable to get local issuer certificate\" mean billing could" \
            "not link the caller's certificate to its trust bundle: whoever signed it is" \
            "not the $TD CA. A name alone proves nothing; the signature is what counts."
    else
        sed 's/^/     /' s_client.out server.log
        bad "the connection failed, but not because the CA was untrusted"
        FAILED=1
    fi
fi

echo
if [[ $FAILED -eq 0 ]]; then
    printf '%s%sDemo passed:%s a trusted service got through with its identity, an untrusted one was refused.\n' "$B" "$G" "$N"
    say "Next: README.md for the CLI, docs/ for the PKI and configuration."
else
    printf '%s%sDemo FAILED:%s see the messages above.\n' "$B" "$R" "$N"
fi
exit "$FAILED"
