#!/usr/bin/env bash
# Bad input to the foundation commands: each is one line `hwca: error: ...`, a non-zero exit, and no
# file written.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"

make_token hwca-root
uri=$(key_uri hwca-root root)
"$HWCA" key generate --key "$uri" --algo ecdsa-p256 >/dev/null
"$HWCA" ca init --key "$uri" --subject "/CN=Root" --out ca.pem >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout l-key.pem -out l.csr -subj /CN=l 2>/dev/null
M="module-path=$SOFTHSM_MODULE&pin-source=file:$T/hwca-root.pin"

# Malformed key URIs (a table of more than 20).
bad_uris=(
  ""
  "pkcs11"
  "pkcs11:"
  "pkcs12:token=hwca-root;object=root?$M"
  "pkcs11:token=hwca-root;object=root;object=x?$M"
  "pkcs11:token=hwca-root;object=ro%zzt?$M"
  "pkcs11:token=hwca-root;object=root%?$M"
  "pkcs11:token=hwca-root;object=root;color=red?$M"
  "pkcs11:token=hwca-root;object=root;type=banana?$M"
  "pkcs11:token=hwca-root;object=root;slot-id=abc?$M"
  "pkcs11:token=hwca-root;object=root;slot-id=-1?$M"
  "pkcs11:token=hwca-root;object=root;id=%g1?$M"
  "pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE&module-path=/x.so"
  "pkcs11:token=hwca-root;object=root?$M&pin-source=file:/y"
  "pkcs11:token=hwca-root;object=root?$M&pin-value=1234"
  "pkcs11:token=hwca-root;object=root?$M&frobnicate=1"
  "pkcs11:token=hwca-root;object=?$M"
  "pkcs11:token=;object=root?$M"
  "pkcs11:token=hwca-root;;object=root?$M"
  "pkcs11:token=hwca-root;object=root?$M&pin-source="
  "pkcs11:tokenhwca-root;object=root?$M"
  "pkcs11:token=hwca-root;object=root?module-path="
  "pkcs11:token=hwca-root;object=root;id=?$M"
  "tpm3:handle=0x81000100"
  "file:"
)
for u in "${bad_uris[@]}"; do
  expect_error "key show --key '$u'" "$HWCA" key show --key "$u"
done

# A module that does not exist; a token that does not exist; a wrong PIN (never retried).
expect_error "missing module" "$HWCA" key show --key "pkcs11:token=hwca-root;object=root?module-path=/nonexistent/lib.so&pin-source=file:$T/hwca-root.pin"
grep -q "module" "$T/.stderr" || fail "missing module: message does not name the module"; ok
expect_error "missing token" "$HWCA" key show --key "pkcs11:token=no-such-token;object=root?$M"
grep -q "no-such-token" "$T/.stderr" || fail "missing token: message does not name it"; ok
printf 'wrong-pin' > wrong.pin
expect_error "wrong PIN" "$HWCA" key show --key "pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE&pin-source=file:$T/wrong.pin"
grep -q "CKR_PIN_INCORRECT" "$T/.stderr" || fail "wrong PIN: message does not say CKR_PIN_INCORRECT: $(cat "$T/.stderr")"; ok
# The token still accepts the right PIN (the wrong one was tried once, not until locked).
"$HWCA" key show --key "$uri" >/dev/null || fail "right PIN after a wrong one"; ok
expect_error "no PIN source" env -u HWCA_PIN "$HWCA" key show --key "pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE" </dev/null
expect_error "pin-value on the command line" "$HWCA" key show --key "pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE&pin-value=1234"
if grep -q 1234 "$T/.stderr"; then fail "the PIN was echoed"; fi; ok

# Unknown algorithm; a label that already exists (the first key intact).
expect_error "unknown algorithm" "$HWCA" key generate --key "$(key_uri hwca-root new)" --algo dsa-1024
expect_error "rsa-1024" "$HWCA" key generate --key "$(key_uri hwca-root new)" --algo rsa-1024
before=$("$HWCA" key show --key "$uri" --output json | jq -r .public_key)
expect_error "existing label" "$HWCA" key generate --key "$uri" --algo ecdsa-p384
after=$("$HWCA" key show --key "$uri" --output json | jq -r .public_key)
[ "$before" = "$after" ] || fail "the existing key was changed"; ok

# A URI matching two keys.
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-root --login --pin "$(cat "$T/hwca-root.pin")" \
  --keypairgen --key-type EC:prime256v1 --label twin --id 01 >/dev/null 2>&1
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-root --login --pin "$(cat "$T/hwca-root.pin")" \
  --keypairgen --key-type EC:prime256v1 --label twin --id 02 >/dev/null 2>&1
expect_error "two keys match" "$HWCA" key show --key "$(key_uri hwca-root twin)"
grep -q "2 keys" "$T/.stderr" || fail "two keys: message does not say how many: $(cat "$T/.stderr")"; ok

# CSRs: malformed, bad signature.
echo "not a csr" > junk.csr
expect_error "malformed CSR" "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr junk.csr --bare out1
[ ! -e out1.pem ] || fail "malformed CSR wrote out1.pem"; ok
openssl req -in l.csr -outform DER -out l.der
# Flip every bit of a byte in the last 8 bytes (inside the signature value): setting it to a fixed
# value would change nothing when the signature already had that value there (1 in 256 runs).
size=$(stat -c %s l.der)
cp l.der bad.der
byte=$(od -An -tu1 -j $((size - 5)) -N1 l.der | tr -d ' ')
printf "\\x$(printf '%02x' $((byte ^ 0xff)))" | dd of=bad.der bs=1 seek=$((size - 5)) conv=notrunc 2>/dev/null
cmp -s l.der bad.der && fail "could not corrupt the CSR"
expect_error "CSR signature" "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr bad.der --bare out2
grep -qi "signature" "$T/.stderr" || fail "bad CSR signature: message: $(cat "$T/.stderr")"; ok
[ ! -e out2.pem ] || fail "bad CSR wrote out2.pem"; ok

# --ca missing, unreadable (a directory), not a certificate; output folder missing.
expect_error "missing --ca" "$HWCA" sign --ca nope.pem --ca-key "$uri" --csr l.csr --bare out3
mkdir cadir
expect_error "unreadable --ca" "$HWCA" sign --ca cadir --ca-key "$uri" --csr l.csr --bare out3
expect_error "--ca not a certificate" "$HWCA" sign --ca l.csr --ca-key "$uri" --csr l.csr --bare out3
[ ! -e out3.pem ] || fail "wrote out3.pem"; ok
expect_error "missing output folder" "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr l.csr --bare nodir/leaf
[ ! -e nodir ] || fail "created nodir"; ok
expect_error "ca init into a missing folder" "$HWCA" ca init --key "$uri" --subject /CN=x --out nodir/ca.pem
expect_error "bad subject" "$HWCA" ca init --key "$uri" --subject "/XX=oops" --out ca2.pem
expect_error "bad validity" "$HWCA" ca init --key "$uri" --subject "/CN=x" --validity forever --out ca2.pem
expect_error "zero validity" "$HWCA" ca init --key "$uri" --subject "/CN=x" --validity 0s --out ca2.pem
[ ! -e ca2.pem ] || fail "wrote ca2.pem"; ok
expect_error "file CA key without --allow-file-ca-key" "$HWCA" sign --ca ca.pem --ca-key "file:$T/l-key.pem" --csr l.csr --bare out4
expect_error "unknown profile" "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr l.csr --profile nosuch --strict-profile --bare out4
expect_error "unknown option" "$HWCA" sign --frobnicate
expect_error "no subcommand" "$HWCA"

# pin-value is accepted only from a configuration file that other users cannot read.
sed "s|pkcs11:token=hwca-example;object=\([a-z-]*\)?module-path=$SOFTHSM_MODULE|pkcs11:token=hwca-root;object=\1?module-path=$SOFTHSM_MODULE\&pin-value=$(cat "$T/hwca-root.pin")|" \
  "$HWCA_SOURCE_DIR/examples/loopback-cluster.yaml" > cluster-pin.yaml
grep -q "pin-value=" cluster-pin.yaml || fail "could not put a pin-value into the cluster file"
chmod 0644 cluster-pin.yaml
expect_error "pin-value in a world-readable cluster file" "$HWCA" k8s init --config cluster-pin.yaml --out k8s-out
grep -q "every user can read it" "$T/.stderr" || fail "world-readable pin-value: $(cat "$T/.stderr")"; ok
if grep -q "$(cat "$T/hwca-root.pin")" "$T/.stderr"; then fail "the PIN was echoed"; fi; ok
[ ! -e k8s-out ] || fail "k8s init wrote output after refusing the cluster file"; ok
chmod 0600 cluster-pin.yaml
"$HWCA" k8s init --config cluster-pin.yaml --out k8s-out >/dev/null || fail "pin-value from a 0600 cluster file"
[ -f k8s-out/pki/ca.crt ] || fail "k8s init from a 0600 cluster file wrote no ca.crt"; ok

# A certificate whose ledger write fails is not written out.
sqlite3 "$HWCA_HOME/ledger.db" "CREATE TRIGGER fail_insert BEFORE INSERT ON certificates BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
rows_before=$(sqlite3 "$HWCA_HOME/ledger.db" "select count(*) from certificates")
expect_error "ledger write fails" "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr l.csr --bare out5
grep -q "injected failure" "$T/.stderr" || fail "ledger failure message: $(cat "$T/.stderr")"; ok
[ ! -e out5.pem ] || fail "a certificate that was not recorded was written out"; ok
out=$("$HWCA" sign --ca ca.pem --ca-key "$uri" --csr l.csr 2>/dev/null) && fail "cfssl-style sign printed a certificate that was not recorded"
[ -z "$out" ] || fail "stdout not empty after ledger failure"; ok
rows_after=$(sqlite3 "$HWCA_HOME/ledger.db" "select count(*) from certificates")
[ "$rows_before" = "$rows_after" ] || fail "ledger rows changed"; ok

# An endless input (a device, or stdin from one) is refused after 64 MiB instead of hanging.
expect_error "a CSR file that is /dev/zero" timeout 60 "$HWCA" sign --ca ca.pem --ca-key "$uri" --csr /dev/zero
grep -q "larger than 64 MiB" "$T/.stderr" || fail "/dev/zero: $(cat "$T/.stderr")"; ok
expect_error "a CSR JSON on an endless stdin" sh -c 'timeout 60 "$0" gencert -initca -ca-key "$1" - < /dev/zero' "$HWCA" "$uri"
grep -q "standard input: larger than 64 MiB" "$T/.stderr" || fail "stdin /dev/zero: $(cat "$T/.stderr")"; ok

finish
