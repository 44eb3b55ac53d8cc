#!/usr/bin/env bash
# The control-plane demo (issue 10): `meshtls ca serve` running; a service bootstraps its
# certificate with a one-time token and a CSR, uses it on /api/peers; an administrator
# revokes it, and the revocation shows in the CRL, in OCSP and in the revocation feed.
#
# Runs from the repository root after `make build` (binaries in build/).  Everything lives
# in a temporary directory removed on exit; the only process it stops is the server it
# started.  Exit status 0 means every step turned out as expected.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${MESHTLS_BUILD_DIR:-build}
MESHTLS=$(realpath "${MESHTLS_BIN:-$BUILD/meshtls}")
TD=demo.local

die() { echo "demo: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }
for tool in curl openssl jq; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -x $MESHTLS ]] || die "$MESHTLS is missing: run 'make build' first"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshtls-cp-demo.XXXXXX")
PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

step "a CA, an administrator, and a registered service 'web'"
"$MESHTLS" ca init --dir ca --trust-domain "$TD" >/dev/null
"$MESHTLS" ca register --dir ca admin >/dev/null
"$MESHTLS" ca issue --dir ca admin --out admin >/dev/null
"$MESHTLS" ca register --dir ca web --dns web.internal >/dev/null

step "meshtls ca serve --admin spiffe://$TD/svc/admin"
"$MESHTLS" ca serve --dir ca --listen 127.0.0.1:0 --status 127.0.0.1:0 \
    --admin "spiffe://$TD/svc/admin" >serve.out 2>serve.log &
PID=$!
for _ in $(seq 100); do
    grep -q '^status on' serve.out 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || die "ca serve exited: $(cat serve.log)"
    sleep 0.1
done
PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' serve.out)
SPORT=$(sed -n 's/^status on .*:\([0-9]*\)$/\1/p' serve.out)
[[ -n $PORT && -n $SPORT ]] || die "ca serve did not start: $(cat serve.log)"
API=https://localhost:$PORT
echo "API on $API, status and OCSP on http://127.0.0.1:$SPORT"
CURL=(curl -sS --max-time 20 --cacert ca/ca.crt)

step "plaintext HTTP on the TLS port, and TLS without a client certificate"
"${CURL[@]}" -w ' -> %{http_code}\n' "http://127.0.0.1:$PORT/api/peers"
"${CURL[@]}" -w ' -> %{http_code}\n' "$API/api/peers"

step "the operator makes a one-time token; the service signs a CSR with it"
TOKEN=$("$MESHTLS" ca token --dir ca web --ttl 10m 2>/dev/null)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout web.key \
    -subj /CN=web -addext "subjectAltName=URI:spiffe://$TD/svc/web,DNS:web.internal" \
    -out web.csr 2>/dev/null
jq -n --arg t "$TOKEN" --rawfile c web.csr '{token: $t, csr: $c}' >sign.json
"${CURL[@]}" -H 'Content-Type: application/json' --data @sign.json "$API/api/v1/sign" >signed.json
jq -r .chain signed.json >web.crt
SERIAL=$(jq -r .serial signed.json)
[[ $SERIAL != null ]] || die "signing failed: $(cat signed.json)"
echo "issued $SERIAL: $(openssl x509 -in web.crt -noout -ext subjectAltName | tail -1)"
echo -n "the same token again: "
"${CURL[@]}" -H 'Content-Type: application/json' --data @sign.json "$API/api/v1/sign" |
    jq -r .error.code | grep -x token_used

step "the service registers on /api/peers with its new certificate"
"${CURL[@]}" --cert web.crt --key web.key -H 'Content-Type: application/json' \
    -d '{"address":"10.0.0.7:8443"}' "$API/api/peers"
echo
"${CURL[@]}" --cert web.crt --key web.key "$API/api/peers" | jq -c .

step "OCSP before the revocation"
openssl ocsp -issuer ca/intermediate.crt -cert web.crt -CAfile ca/ca.crt \
    -url "http://127.0.0.1:$SPORT/ocsp" 2>&1 | grep -E "web.crt|verify" | tee ocsp1.txt
grep -q 'web.crt: good' ocsp1.txt || die "OCSP did not say good"
EPOCH=$("${CURL[@]}" --cert admin/admin.crt --key admin/admin.key \
    "$API/api/v1/revocations?since=0" | jq .epoch)

step "the administrator revokes 'web' (keyCompromise)"
"${CURL[@]}" --cert admin/admin.crt --key admin/admin.key -X POST \
    -H 'Content-Type: application/json' -d '{"reason":"keyCompromise","replace":false}' \
    "$API/api/admin/security/certificates/web/revoke" | jq -c .

step "the revocation in the feed, the CRL and OCSP"
"${CURL[@]}" --cert admin/admin.crt --key admin/admin.key \
    "$API/api/v1/revocations?since=$EPOCH&wait=5" | jq -c . | tee feed.txt
grep -q "$SERIAL" feed.txt || die "the feed does not list $SERIAL"
"${CURL[@]}" "$API/crl" | openssl crl -inform DER -noout -text >crl.txt
grep -qi "$SERIAL" <(tr -d ':' <crl.txt | tr 'A-F' 'a-f') || die "the CRL does not list $SERIAL"
echo "CRL: lists $SERIAL"
openssl ocsp -issuer ca/intermediate.crt -cert web.crt -CAfile ca/ca.crt \
    -url "http://127.0.0.1:$SPORT/ocsp" 2>&1 | grep -E "web.crt|verify|Reason" | tee ocsp2.txt
grep -q 'web.crt: revoked' ocsp2.txt || die "OCSP did not say revoked"
echo -n "and /api/peers refuses the revoked certificate: "
"${CURL[@]}" --cert web.crt --key web.key "$API/api/peers" | jq -r .error.code

echo
echo "demo: every step as expected"
