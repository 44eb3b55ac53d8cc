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
EXTRA_PIDS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    for pid in "${EXTRA_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

# ---- the sidecar: meshtls proxy in front of an unmodified plaintext service ----------

# start_bg NAME CMD...: start CMD in the background (output to NAME.out/.log), remember its PID
start_bg() {
    local name=$1
    shift
    "$@" >"$name.out" 2>"$name.log" &
    EXTRA_PIDS+=($!)
}
# port_of FILE WORD: wait (bounded) for "WORD on HOST:PORT" in FILE, print PORT
port_of() {
    for _ in $(seq 100); do
        local p
        p=$(sed -n "s/^$2 on .*:\([0-9]*\)$/\1/p" "$1" 2>/dev/null | head -1)
        [[ -n $p ]] && { echo "$p"; return 0; }
        sleep 0.1
    done
    return 1
}

step "put billing's plaintext HTTP service behind meshtls proxy server"
mkdir -p site && echo "billing ledger: 42 invoices" >site/index.html
BACKEND_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_bg backend python3 -m http.server --bind 127.0.0.1 --directory site "$BACKEND_PORT"
for _ in $(seq 100); do  # bounded wait until the backend accepts connections
    (exec 3<>"/dev/tcp/127.0.0.1/$BACKEND_PORT") 2>/dev/null && break
    sleep 0.1
done
start_bg proxy-server "$MESHTLS" proxy server --listen 127.0.0.1:0 \
    --target "127.0.0.1:$BACKEND_PORT" --cert billing/billing.crt --key billing/billing.key \
    --cacert billing/ca.crt --allow-uri "spiffe://$TD/svc/orders" --status 127.0.0.1:0
PS_PORT=$(port_of proxy-server.out listening) || die "proxy server did not start: $(cat proxy-server.log)"
STATUS_PORT=$(port_of proxy-server.out status) || die "no status port: $(cat proxy-server.log)"
printf '   %s$ meshtls proxy server --listen 127.0.0.1:%s --target 127.0.0.1:%s --cert billing/billing.crt --key billing/billing.key --cacert billing/ca.crt --allow-uri spiffe://%s/svc/orders --status 127.0.0.1:%s%s\n' \
    "$D" "$PS_PORT" "$BACKEND_PORT" "$TD" "$STATUS_PORT" "$N"
say "The service itself (a plain python http.server on 127.0.0.1:$BACKEND_PORT) knows" \
    "nothing about TLS. The proxy accepts only mutual TLS and only from the identity" \
    "spiffe://$TD/svc/orders, then forwards the bytes."

step "orders calls through its own sidecar: meshtls proxy client"
start_bg proxy-orders "$MESHTLS" proxy client --listen 127.0.0.1:0 --target "127.0.0.1:$PS_PORT" \
    --cert orders/orders.crt --key orders/orders.key --cacert orders/ca.crt \
    --verify-spiffe-id "spiffe://$TD/svc/billing"
PC_PORT=$(port_of proxy-orders.out listening) || die "proxy client did not start: $(cat proxy-orders.log)"
say "orders' application talks plain HTTP to 127.0.0.1:$PC_PORT; its sidecar dials billing" \
    "with mutual TLS and insists that the other end is spiffe://$TD/svc/billing."
if resp=$(show curl -sS --max-time 10 "http://127.0.0.1:$PC_PORT/") && [[ $resp == *"42 invoices"* ]]; then
    echo "$resp"
    ok "orders → proxy client → (mTLS) → proxy server → billing: allowed, the answer came back"
else
    bad "orders should have reached billing through the proxies"
    sed 's/^/     /' proxy-server.log proxy-orders.log
    FAILED=1
fi

step "reports, a trusted service but not on billing's allow-list, tries the same"
show "$MESHTLS" ca register --dir "$WORK/ca" reports
show "$MESHTLS" ca issue --dir "$WORK/ca" reports --out "$WORK/reports"
start_bg proxy-reports "$MESHTLS" proxy client --listen 127.0.0.1:0 --target "127.0.0.1:$PS_PORT" \
    --cert reports/reports.crt --key reports/reports.key --cacert reports/ca.crt \
    --verify-spiffe-id "spiffe://$TD/svc/billing"
PR_PORT=$(port_of proxy-reports.out listening) || die "proxy client did not start"
if show curl -sS --max-time 10 "http://127.0.0.1:$PR_PORT/" >/dev/null 2>&1; then
    bad "reports should have been denied"
    FAILED=1
else
    for _ in $(seq 100); do grep -q "decision=deny" proxy-server.log && break; sleep 0.1; done
    printf '   %sbilling'"'"'s proxy logged (audit):%s\n' "$D" "$N"
    grep "decision=deny" proxy-server.log | head -1 | sed 's/^/     /'
    ok "reports → billing: its certificate is valid, but the policy does not allow it; denied before any byte reached billing"
fi

step "the proxy's Prometheus metrics counted both decisions"
show sh -c "curl -s http://127.0.0.1:$STATUS_PORT/metrics | grep -E '^meshtls_(policy_decisions_total|tls_handshakes_total|connections_active)'"
# read the page whole first: with pipefail, grep -q leaving early would fail curl (SIGPIPE)
metrics=$(curl -s "http://127.0.0.1:$STATUS_PORT/metrics")
if grep -q 'decision="deny"} 1' <<<"$metrics"; then
    ok "one allow, one deny, as seen at http://127.0.0.1:$STATUS_PORT/metrics (also /healthz, /readyz)"
else
    bad "the metrics should show one denial"
    FAILED=1
fi

echo
if [[ $FAILED -eq 0 ]]; then
    printf '%s%sDemo passed:%s a trusted service got through with its identity, an untrusted one was refused, and the sidecar let orders in and kept reports out.\n' "$B" "$G" "$N"
    say "Next: README.md for the CLI, docs/ for the PKI and configuration."
else
    printf '%s%sDemo FAILED:%s see the messages above.\n' "$B" "$R" "$N"
fi
exit "$FAILED"
