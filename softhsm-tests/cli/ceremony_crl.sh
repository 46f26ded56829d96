#!/usr/bin/env bash
# Revocation and CRLs through a SoftHSM2 token: `hwca revoke` marks the ledger row, `hwca crl` signs a CRL v2
# that `openssl crl -verify` accepts and that makes the revoked certificate (and only it) fail
# `openssl verify -crl_check`; CRL numbers increase; the audit chain records it all and verifies.
source "$(dirname "$0")/lib.bash"

make_token hwca-root
ROOT=$(key_uri hwca-root root)
AUDIT=$(key_uri hwca-root root-audit)
"$HWCA" key generate --key "$ROOT" --algo ecdsa-p384 >/dev/null
"$HWCA" key generate --key "$AUDIT" --algo ecdsa-p256 >/dev/null
"$HWCA" ca init --key "$ROOT" --subject '/CN=CRL Test Root/O=hwca' --out root.pem >/dev/null

for n in good bad held; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$n.key" -subj "/CN=$n" -out "$n.csr" 2>/dev/null
  "$HWCA" sign --ca root.pem --ca-key "$ROOT" --csr "$n.csr" --profile client --out "$n.pem" >/dev/null
done
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
BAD=$(serial_of bad.pem)
HELD=$(serial_of held.pem)

# Bad input first: nothing is revoked.
expect_error "unknown reason" "$HWCA" revoke --serial "0x$BAD" --reason stolen
expect_error "unknown serial" "$HWCA" revoke --serial 0x0123456789 --reason keyCompromise
expect_error "not hex" "$HWCA" revoke --serial nothex --reason keyCompromise
expect_error "removeFromCRL" "$HWCA" revoke --serial "0x$BAD" --reason removeFromCRL

"$HWCA" revoke --serial "0x$BAD" --reason keyCompromise | grep -q "keyCompromise" || fail "revoke output"; ok
# Colons and upper case are accepted too.
"$HWCA" revoke --serial "$(echo "$HELD" | sed 's/../&:/g; s/:$//')" --reason certificateHold >/dev/null; ok
expect_error "revoked twice" "$HWCA" revoke --serial "0x$BAD" --reason superseded
out=$("$HWCA" ledger list --output json)
grep -q '"status": "revoked"' <<<"$out" || fail "ledger shows no revoked row"; ok

"$HWCA" crl --ca root.pem --ca-key "$ROOT" --next-update 168h --out root.crl 2>crl.err | grep -q "number 1" || fail "first CRL is not number 1"
grep -q "audit checkpoint" crl.err || fail "no audit checkpoint after the CRL: $(cat crl.err)"; ok
openssl crl -in root.crl -noout -CAfile root.pem -verify 2>&1 | grep -q "verify OK" || fail "openssl crl -verify"; ok
text=$(openssl crl -in root.crl -noout -text)
grep -q "Version 2" <<<"$text" || fail "not a v2 CRL"; ok
grep -q "X509v3 CRL Number" <<<"$text" || fail "no CRL number"; ok
grep -q "X509v3 Authority Key Identifier" <<<"$text" || fail "no AKI"; ok
grep -q "Next Update" <<<"$text" || fail "no next update"; ok
grep -q "Key Compromise" <<<"$text" || fail "no keyCompromise reason"; ok
grep -q "Certificate Hold" <<<"$text" || fail "no certificateHold reason"; ok
grep -qi "$BAD" <<<"$text" || fail "revoked serial missing from the CRL"; ok
# The CRL's AKI is the root's SKI.
ski=$(openssl x509 -in root.pem -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' ')
grep -A1 "Authority Key Identifier" <<<"$text" | tail -1 | tr -d ' ' | grep -qi "${ski#keyid:}" || fail "AKI != root SKI"; ok

openssl verify -crl_check -CAfile root.pem -CRLfile root.crl good.pem >/dev/null || fail "good cert fails with the CRL"; ok
if out=$(openssl verify -crl_check -CAfile root.pem -CRLfile root.crl bad.pem 2>&1); then fail "revoked cert verifies: $out"; fi
grep -q "certificate revoked" <<<"$out" || fail "unexpected failure: $out"; ok
if openssl verify -crl_check -CAfile root.pem -CRLfile root.crl held.pem >/dev/null 2>&1; then fail "held cert verifies"; fi; ok

# DER, and an increasing CRL number.
"$HWCA" crl --ca root.pem --ca-key "$ROOT" --next-update 24h --der --out root.crl.der 2>/dev/null | grep -q "number 2" || fail "second CRL is not number 2"; ok
openssl crl -inform DER -in root.crl.der -noout -crlnumber | grep -q "crlNumber=0x02" || fail "DER CRL number"; ok
openssl crl -inform DER -in root.crl.der -noout -CAfile root.pem -verify 2>&1 | grep -q "verify OK" || fail "DER CRL verify"; ok

expect_error "bad next-update" "$HWCA" crl --ca root.pem --ca-key "$ROOT" --next-update soon --out x.crl
expect_error "missing output folder" "$HWCA" crl --ca root.pem --ca-key "$ROOT" --out nowhere/x.crl
[ ! -e x.crl ] || fail "a CRL was written after an error"; ok

# The audit chain: intact, with a checkpoint signed by the audit key; then tampered with.
out=$("$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "audit verify: $out"; ok
"$HWCA" key show --key "$AUDIT" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"], end="")' > audit.pub
out=$("$HWCA" audit verify --audit-pubkey audit.pub)
grep -q "intact" <<<"$out" || fail "audit verify with the pinned key"; ok
expect_error "wrong pinned key" "$HWCA" audit verify --audit-pubkey root.pem
"$HWCA" audit checkpoint --audit-key "$AUDIT" | grep -q "audit checkpoint" || fail "audit checkpoint"; ok
python3 - "$HWCA_HOME/ledger.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE audit_events SET detail = replace(detail, 'keyCompromise', 'superseded') WHERE kind = 'certificate-revoked'")
db.commit()
PY
expect_error "tampered chain" "$HWCA" audit verify
grep -q "BROKEN at entry" "$T/.stderr" || fail "audit verify does not name the entry: $(cat "$T/.stderr")"; ok
finish
