#!/usr/bin/env bash
# Ceremonies with TPM keys on swtpm.
#  A. The examples as shipped: root.yaml and intermediate.yaml on a SoftHSM2 token (hwca-root), the
#     intermediate's key generated in a TPM by examples/ceremonies/intermediate-tpm2.yaml (paths and TCTI
#     adjusted), then put under dual control with `custody split`; the root token is moved away and the
#     TPM intermediate issues a leaf with 3 of 5 shares.
#  B. Both keys in TPMs (two swtpms standing in for two machines): the root a persistent key (custody
#     split, then the intermediate and CRL ceremonies with --pin-shares), the intermediate a persistent key.
# Pre-flight prints the TPM's fixedTPM/fixedParent/sensitiveDataOrigin readings; every transcript
# verifies offline with the root certificate; one changed byte does not.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/lib-tpm2.bash"

cp -r "$HWCA_SOURCE_DIR/examples/ceremonies" "$T/c"
cd "$T/c"
mkdir -p "$T/root-home" "$T/int-home"

flip() {  # flip FILE OFFSET: replace the byte at OFFSET by another printable one
  python3 - "$1" "$2" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read())
b[off] = ord('A') if b[off] != ord('A') else ord('B')
open(p, 'wb').write(bytes(b))
PY
}
# A ceremony prints its pre-flight checks on stdout as it goes; a refused one ends with one error line.
expect_refused() {  # expect_refused DESCRIPTION CMD...
  local desc=$1; shift
  local rc=0
  "$@" >"$T/.stdout" 2>"$T/.stderr" || rc=$?
  [ "$rc" -ne 0 ] || fail "$desc: exit 0"
  [ "$(grep -c . "$T/.stderr")" -eq 1 ] || fail "$desc: expected one line on stderr, got: $(cat "$T/.stderr")"
  grep -q "^hwca: error: " "$T/.stderr" || fail "$desc: stderr is not 'hwca: error: ...'"
  ok
}
# tamper_checks DIR ROOT: one changed byte anywhere in DIR/transcript.json is refused.
tamper_checks() {
  local dir=$1 root=$2 size off
  size=$(stat -c %s "$dir/transcript.json")
  for off in 0 $((size / 4)) $((size / 2)) $((size - 10)); do
    rm -rf tamper; mkdir tamper; cp "$dir"/* tamper/
    flip tamper/transcript.json "$off"
    expect_error "$dir: byte $off changed" "$HWCA" ceremony verify tamper/transcript.json --root "$root"
  done
}

# ---------------------------------------------------------------------------------------------------
# A. SoftHSM2 root, TPM intermediate, with the example files.
make_token hwca-root
export HWCA_HOME="$T/root-home"
on_root() { env HWCA_HOME="$T/root-home" HWCA_PIN="$(cat "$T/hwca-root.pin")" "$@"; }
on_int() { env HWCA_HOME="$T/int-home" "$@"; }
start_swtpm int
INT_TCTI=$SWTPM_TCTI
sed -i "s#/var/lib/hwca/intermediate.tss2.pem#$T/intermediate.tss2.pem#; s#tcti=device:/dev/tpmrm0#tcti=$INT_TCTI#" \
  intermediate-tpm2.yaml
INT_URI="tpm2:file=$T/intermediate.tss2.pem?tcti=$INT_TCTI"

out=$(on_root "$HWCA" ceremony run root.yaml)
grep -q "step 4: issue-root-certificate" <<<"$out" || fail "root ceremony: $out"; ok

out=$(on_int "$HWCA" ceremony run intermediate-tpm2.yaml --check)
grep -q "pre-flight: audit key tpm2:file=$T/intermediate-audit.tss2.pem: ok (absent, will be generated" <<<"$out" ||
  fail "TPM key ceremony --check: $out"; ok
out=$(on_int "$HWCA" ceremony run intermediate-tpm2.yaml)
grep -q "step 1: generate-key: tpm2:file=$T/intermediate.tss2.pem ecdsa-p256" <<<"$out" || fail "TPM key ceremony: $out"; ok
grep -q "make-csr" <<<"$out" || fail "TPM key ceremony: no CSR: $out"; ok
for a in fixedTPM fixedParent sensitiveDataOrigin; do
  grep -q "\"$a\": \"true\"" out/intermediate-key/transcript.json || fail "transcript has no $a reading"
done; ok
[ -f "$T/intermediate-audit.tss2.pem" ] || fail "no TPM audit key next to the intermediate's key"; ok
openssl req -in out/intermediate-key/intermediate.csr -noout -verify 2>&1 | grep -q "verify OK" || fail "TPM CSR"; ok

out=$(on_root "$HWCA" ceremony run intermediate.yaml)
grep -q "issue-intermediate-certificate" <<<"$out" || fail "intermediate ceremony: $out"; ok
openssl verify -CAfile out/root/root.pem out/intermediate/intermediate.pem >/dev/null || fail "intermediate does not verify"; ok
cmp -s <(openssl x509 -in out/intermediate/intermediate.pem -noout -pubkey) out/intermediate-key/intermediate.pub.pem ||
  fail "the intermediate certificate is not for the TPM key"; ok

# Dual control over the TPM intermediate; the root token goes to the safe; the intermediate issues a leaf.
on_int "$HWCA" custody split --key "$INT_URI" --shares 5 --threshold 3 --out int-shares >/dev/null
mv "$T/softhsm/tokens" "$T/offline-safe"; mkdir "$T/softhsm/tokens"
expect_error "root token absent" on_root "$HWCA" key show --key "pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf.example -out leaf.csr 2>/dev/null
expect_error "TPM intermediate with 2 shares" on_int "$HWCA" sign --ca out/intermediate/intermediate.pem --ca-key "$INT_URI" \
  --csr leaf.csr --profile server --hostname leaf.example --out leaf.pem --pin-shares int-shares/1,int-shares/5
grep -q "1 more share needed" "$T/.stderr" || fail "2 shares: $(cat "$T/.stderr")"; ok
on_int "$HWCA" sign --ca out/intermediate/intermediate.pem --ca-key "$INT_URI" --csr leaf.csr --profile server \
  --hostname leaf.example --out leaf.pem --pin-shares int-shares/1,int-shares/3,int-shares/5 >/dev/null
openssl verify -CAfile out/root/root.pem -untrusted out/intermediate/intermediate.pem leaf.pem >/dev/null || fail "leaf chain"; ok

for c in root intermediate; do
  out=$("$HWCA" ceremony verify "out/$c/transcript.json" --root out/root/root.pem)
  grep -q "transcript verified" <<<"$out" || fail "$c transcript: $out"; ok
done
out=$("$HWCA" ceremony verify out/intermediate-key/transcript.json --root out/root/root.pem --cert out/intermediate/intermediate.pem)
grep -q "that certificate verifies against the root: OK" <<<"$out" || fail "TPM key transcript: $out"; ok
tamper_checks out/intermediate-key out/root/root.pem
out=$(on_int "$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "intermediate audit chain: $out"; ok

# ---------------------------------------------------------------------------------------------------
# B. Both keys in TPMs.
start_swtpm root
ROOT_TCTI=$SWTPM_TCTI
ROOT_URI="tpm2:handle=0x81000100?tcti=$ROOT_TCTI"
ROOT_AUDIT="tpm2:file=$T/root-audit.tss2.pem?tcti=$ROOT_TCTI"
INT2_URI="tpm2:handle=0x81000101?tcti=$INT_TCTI"
mkdir b && cd b
export HWCA_HOME="$T/b-root-home"
cat > root.yaml <<EOF
ceremony: root
key:
  uri: "$ROOT_URI"
  generate: ecdsa-p384
audit-key: "$ROOT_AUDIT"
certificate:
  subject: "/CN=TPM Root CA"
  validity: 87600h
  pathlen: 1
outputs:
  folder: out/root
  certificate: root.pem
EOF
cat > key.yaml <<EOF
ceremony: key
key:
  uri: "$INT2_URI"
  generate: ecdsa-p256
audit-key: "tpm2:file=$T/int2-audit.tss2.pem?tcti=$INT_TCTI"
csr:
  subject: "/CN=TPM Intermediate CA"
outputs:
  folder: out/intermediate-key
  csr: intermediate.csr
EOF
cat > intermediate.yaml <<EOF
ceremony: intermediate
key:
  uri: "$ROOT_URI"
audit-key: "$ROOT_AUDIT"
issuer-certificate: out/root/root.pem
csr: out/intermediate-key/intermediate.csr
certificate:
  validity: 43800h
  pathlen: 0
outputs:
  folder: out/intermediate
  certificate: intermediate.pem
EOF
cat > crl.yaml <<EOF
ceremony: crl
key:
  uri: "$ROOT_URI"
audit-key: "$ROOT_AUDIT"
issuer-certificate: out/root/root.pem
outputs:
  folder: out/crl
  crl: root.crl
EOF
# A persistent TPM key has no "<object>-audit" next to it: the ceremony asks for audit-key.
sed '/^audit-key/d' root.yaml > root-noaudit.yaml
expect_refused "handle key without audit-key" "$HWCA" ceremony run root-noaudit.yaml
grep -q "give its URI" "$T/.stderr" || fail "no audit key: $(cat "$T/.stderr")"; ok

out=$("$HWCA" ceremony run root.yaml)
grep -q "step 4: issue-root-certificate" <<<"$out" || fail "TPM root ceremony: $out"; ok
"$HWCA" custody split --key "$ROOT_URI" --shares 5 --threshold 3 --out root-shares >/dev/null
SHARES=root-shares/2,root-shares/4,root-shares/5

out=$(HWCA_HOME="$T/b-int-home" "$HWCA" ceremony run key.yaml)
grep -q "make-csr" <<<"$out" || fail "TPM key ceremony (handle): $out"; ok

expect_refused "TPM root with 2 shares" "$HWCA" ceremony run intermediate.yaml --pin-shares root-shares/1,root-shares/2
grep -q "1 more share needed" "$T/.stderr" || fail "2 shares: $(cat "$T/.stderr")"; ok
out=$("$HWCA" ceremony run intermediate.yaml --check --pin-shares "$SHARES")
grep -q "pre-flight: key attributes: ok (fixedTPM=true, fixedParent=true, sensitiveDataOrigin=true)" <<<"$out" ||
  fail "pre-flight does not report the TPM attributes: $out"; ok
grep -q "pre-flight: the key matches the issuer certificate: ok" <<<"$out" || fail "pre-flight key match: $out"; ok
out=$("$HWCA" ceremony run intermediate.yaml --pin-shares "$SHARES")
grep -q "issue-intermediate-certificate" <<<"$out" || fail "TPM intermediate ceremony: $out"; ok
openssl verify -CAfile out/root/root.pem out/intermediate/intermediate.pem >/dev/null || fail "TPM intermediate does not verify"; ok
out=$("$HWCA" ceremony run crl.yaml --pin-shares "$SHARES")
grep -q "issue-crl: number 1" <<<"$out" || fail "TPM CRL ceremony: $out"; ok
openssl crl -in out/crl/root.crl -noout -CAfile out/root/root.pem -verify 2>&1 | grep -q "verify OK" || fail "TPM root CRL"; ok

# The root TPM goes away (its swtpm stopped); the TPM intermediate issues a leaf on its own.
kill_swtpm
expect_error "TPM root absent" "$HWCA" key show --key "$ROOT_URI"
HWCA_HOME="$T/b-int-home" "$HWCA" sign --ca out/intermediate/intermediate.pem --ca-key "$INT2_URI" --csr ../leaf.csr \
  --profile server --hostname leaf.example --out leaf.pem >/dev/null
openssl verify -CAfile out/root/root.pem -untrusted out/intermediate/intermediate.pem leaf.pem >/dev/null || fail "TPM leaf chain"; ok

for c in root intermediate crl; do
  out=$("$HWCA" ceremony verify "out/$c/transcript.json" --root out/root/root.pem)
  grep -q "the ceremony's key is the root certificate's key: OK" <<<"$out" || fail "TPM $c transcript: $out"; ok
  grep -q '"fixedTPM": "true"' "out/$c/transcript.json" || fail "TPM $c transcript has no TPM readings"; ok
done
out=$("$HWCA" ceremony verify out/intermediate-key/transcript.json --root out/root/root.pem --cert out/intermediate/intermediate.pem)
grep -q "transcript verified" <<<"$out" || fail "TPM key transcript (handle): $out"; ok
tamper_checks out/root out/root/root.pem
tamper_checks out/intermediate out/root/root.pem
out=$("$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "TPM root audit chain: $out"
grep -q "signed through entry" <<<"$out" || fail "no checkpoint in the TPM root's chain: $out"; ok
finish
