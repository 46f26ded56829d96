#!/usr/bin/env bash
# Automatic audit checkpoints (HWCA_AUDIT_EVERY=N, HWCA_AUDIT_KEY=URI) on a SoftHSM2 token: 25
# certificates with N=10 give exactly 2 checkpoints and 5 unsigned entries (`hwca sign`, one process per
# certificate); `gencert`, `k8s init`, `k8s sign-csr` and `hwca serve` (a background thread) leave fewer
# than N entries unsigned; the audit key is never the CA key (refused before anything is recorded); a
# bad setting is one usage error.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/lib-cfssl.bash"
source "$(dirname "$0")/lib-serve.bash"

make_token hwca-ca
CA=$(key_uri hwca-ca ca)
AUDIT=$(key_uri hwca-ca ca-audit)
"$HWCA" key generate --key "$CA" --algo ecdsa-p256 >/dev/null
"$HWCA" key generate --key "$AUDIT" --algo ecdsa-p256 >/dev/null
"$HWCA" ca init --key "$CA" --subject /CN=Audit-Test-CA --out ca.pem >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf.example -out leaf.csr 2>/dev/null
sign_one() {  # sign_one LEDGER OUT
  "$HWCA" sign --ledger "$1" --ca ca.pem --ca-key "$CA" --csr leaf.csr --profile server --hostname leaf.example --out "$2"
}
report() { "$HWCA" audit verify --ledger "$1" --output json --audit-pubkey audit.pub; }  # report LEDGER
"$HWCA" key show --key "$AUDIT" --output json | jq -r .public_key > audit.pub
openssl pkey -pubin -in audit.pub -noout || fail "cannot read the audit key's public key"

# Bad settings: one usage error each (exit 2), before anything is recorded.
for bad in "HWCA_AUDIT_EVERY=10" "HWCA_AUDIT_KEY=$AUDIT" "HWCA_AUDIT_EVERY=0 HWCA_AUDIT_KEY=$AUDIT" \
           "HWCA_AUDIT_EVERY=ten HWCA_AUDIT_KEY=$AUDIT" "HWCA_AUDIT_EVERY=-3 HWCA_AUDIT_KEY=$AUDIT"; do
  rc=0
  env $bad "$HWCA" sign --ledger bad.db --ca ca.pem --ca-key "$CA" --csr leaf.csr --profile server --hostname leaf.example \
    --out bad.pem >/dev/null 2>"$T/.stderr" || rc=$?
  [ "$rc" = 2 ] || fail "$bad: exit $rc, want 2: $(cat "$T/.stderr")"
  grep -q "^hwca: error: HWCA_AUDIT_" "$T/.stderr" || fail "$bad: $(cat "$T/.stderr")"
  [ ! -e bad.pem ] || fail "$bad: a certificate was written"; ok
done

export HWCA_AUDIT_EVERY=10 HWCA_AUDIT_KEY="$AUDIT"

# 25 certificates with N=10, each from its own `hwca sign` process: checkpoints over entries 10 and 20.
: > sign.err
for i in $(seq 1 25); do sign_one leaves.db "leaf$i.pem" >/dev/null 2>>sign.err || fail "sign $i: $(cat sign.err)"; done
[ "$(grep -c 'audit checkpoint #' sign.err)" = 2 ] || fail "expected 2 checkpoint lines: $(cat sign.err)"; ok
grep -q "audit checkpoint #1 signed over entry 10 (HWCA_AUDIT_EVERY=10)" sign.err || fail "first checkpoint: $(cat sign.err)"; ok
grep -q "audit checkpoint #2 signed over entry 20 (HWCA_AUDIT_EVERY=10)" sign.err || fail "second checkpoint: $(cat sign.err)"; ok
r=$(report leaves.db)
jq -e '.intact and .entries == 25 and .checkpoints == 2 and .last_signed_id == 20 and .unsigned_entries == 5' <<<"$r" >/dev/null ||
  fail "audit verify after 25 certificates: $r"; ok
out=$("$HWCA" audit verify --ledger leaves.db)
grep -q "25 entries, 2 signed checkpoints, signed through entry 20; 5 entries after the last checkpoint" <<<"$out" ||
  fail "audit verify text: $out"; ok
[ "$(sqlite3 leaves.db "SELECT group_concat(entry_id) FROM audit_checkpoints")" = "10,20" ] || fail "checkpoint rows"; ok

# The audit key is never the CA key: refused when the CA key is opened, before anything is signed or recorded.
expect_error "audit key = CA key (sign)" env HWCA_AUDIT_KEY="$CA" "$HWCA" sign --ledger leaves.db --ca ca.pem --ca-key "$CA" \
  --csr leaf.csr --profile server --hostname leaf.example --out same.pem
grep -q "is the CA key; use a dedicated key" "$T/.stderr" || fail "same key: $(cat "$T/.stderr")"; ok
[ ! -e same.pem ] || fail "a certificate was written with the CA key as audit key"; ok
[ "$(sqlite3 leaves.db "SELECT count(*) FROM certificates")" = 25 ] || fail "a certificate was recorded with the CA key as audit key"; ok
# ...and by the ledger itself when the CA key is opened another way (gencert -initca generates it):
# the self-signed root is refused before it is recorded.
echo '{"CN":"other root","key":{"algo":"ecdsa","size":256}}' > other-csr.json
OTHER=$(key_uri hwca-ca other-root)
expect_error "audit key = new CA key (gencert -initca)" env HWCA_AUDIT_EVERY=1 HWCA_AUDIT_KEY="$OTHER" "$HWCA" gencert \
  --ledger other.db -initca -ca-key "$OTHER" other-csr.json
grep -q "is the CA key that signs these certificates" "$T/.stderr" || fail "initca same key: $(cat "$T/.stderr")"; ok
[ "$(sqlite3 other.db "SELECT count(*) FROM certificates")" = 0 ] || fail "the root was recorded"; ok

# gencert (cfssl style), N=3: 7 certificates -> checkpoints over 3 and 6, 1 unsigned.
echo '{"CN":"svc.example","hosts":["svc.example"],"key":{"algo":"ecdsa","size":256}}' > svc-csr.json
for i in $(seq 1 7); do
  HWCA_AUDIT_EVERY=3 "$HWCA" gencert --ledger gencert.db -ca ca.pem -ca-key "$CA" svc-csr.json >/dev/null 2>>gencert.err ||
    fail "gencert $i: $(cat gencert.err)"
done
r=$(report gencert.db)
jq -e '.intact and .entries == 7 and .checkpoints == 2 and .last_signed_id == 6 and .unsigned_entries == 1' <<<"$r" >/dev/null ||
  fail "gencert: $r"; ok

# k8s init: its certificates are recorded in batches; a checkpoint follows each batch that leaves N or
# more entries unsigned, so fewer than N remain unsigned at the end. Then k8s sign-csr with N=1.
cat > cluster.yaml <<EOF
name: kubernetes
controlPlane:
  - {name: cp1, ip: 127.0.0.1}
workers:
  - {name: w1, ip: 127.0.0.2}
cas:
  kubernetes-ca:
    key: "$(key_uri hwca-ca kubernetes-ca)"
  etcd-ca:
    key: "$(key_uri hwca-ca etcd-ca)"
  front-proxy-ca:
    key: "$(key_uri hwca-ca front-proxy-ca)"
EOF
"$HWCA" k8s init --ledger k8s.db --config cluster.yaml --out k8s >/dev/null 2>k8s.err || fail "k8s init: $(cat k8s.err)"
r=$(report k8s.db)
jq -e '.intact and .entries >= 10 and .checkpoints >= 1 and .unsigned_entries < 10' <<<"$r" >/dev/null || fail "k8s init: $r"; ok
grep -q "audit checkpoint #" k8s.err || fail "k8s init printed no checkpoint: $(cat k8s.err)"; ok
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout kc.key -subj "/O=system:nodes/CN=system:node:w1" \
  -out kc.csr 2>/dev/null
jq -n --arg req "$(base64 -w0 kc.csr)" '{apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
  metadata: {name: "csr-auto", uid: "6b1c7f9e-0000-4000-8000-000000000042"},
  spec: {groups: ["system:nodes", "system:authenticated"], request: $req, signerName: "kubernetes.io/kube-apiserver-client-kubelet",
         usages: ["digital signature", "client auth"], username: "system:node:w1"},
  status: {conditions: [{type: "Approved", status: "True", reason: "Test", message: "approved"}]}}' > csr.json
before=$(jq .checkpoints <<<"$r")
HWCA_AUDIT_EVERY=1 "$HWCA" k8s sign-csr --ledger k8s.db --config cluster.yaml --pki k8s --in csr.json > signed.json 2>sign-csr.err ||
  fail "k8s sign-csr: $(cat sign-csr.err)"
jq -e '.status.certificate | length > 0' signed.json >/dev/null || fail "k8s sign-csr issued nothing: $(cat signed.json)"; ok
r=$(report k8s.db)
jq -e --argjson b "$before" '.intact and .checkpoints == $b + 1 and .unsigned_entries == 0' <<<"$r" >/dev/null ||
  fail "k8s sign-csr with N=1: $r"; ok

# hwca serve: checkpoints come from a background thread while it serves, and once more when it stops.
free_port PORT
serve_start -ca ca.pem -ca-key "$CA" -ledger serve.db -address 127.0.0.1 -port "$PORT" --workers 2
sign_request leaf.csr www '["leaf.example"]' > req.json
for i in $(seq 1 25); do
  got=$(api sign req.json)
  [ "$got" = 200 ] || fail "serve request $i: HTTP $got: $(cat "$T/resp.json")"
done; ok
serve_stop
grep -q "audit checkpoint #" "$T/serve.err" || fail "serve signed no checkpoint: $(cat "$T/serve.err")"; ok
r=$(report serve.db)
# 27 entries: serve-started, 25 certificates, serve-stopped.
jq -e '.intact and .entries == 27 and .checkpoints >= 1 and .unsigned_entries < 10' <<<"$r" >/dev/null || fail "serve: $r"; ok
# A server whose audit key is its CA key does not start.
rc=0
HWCA_AUDIT_KEY="$CA" timeout 20 "$HWCA" serve -ca ca.pem -ca-key "$CA" -ledger serve.db -address 127.0.0.1 -port "$PORT" \
  2>"$T/.stderr" || rc=$?
[ "$rc" = 1 ] || fail "serve with the CA key as audit key: exit $rc"
grep -q "is the CA key; use a dedicated key" "$T/.stderr" || fail "serve same key: $(cat "$T/.stderr")"; ok
finish
