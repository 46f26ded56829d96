#!/usr/bin/env bash
# The example ceremonies (examples/ceremonies/*.yaml) on two SoftHSM2 stores standing in for two devices
# (hwca-root on the offline machine, hwca-intermediate on the signing machine, each with its own
# SOFTHSM2_CONF and HWCA_HOME): root ceremony with the PIN from custodians' shares, key ceremony on the
# intermediate token, intermediate and CRL ceremonies on the root; then the root token is moved away and
# the intermediate issues a leaf. Transcripts verify offline with the root certificate; one changed byte
# does not.
source "$(dirname "$0")/lib.bash"

# One SoftHSM2 store per "device".
device() {  # device NAME LABEL: $T/NAME/softhsm2.conf, user PIN $T/NAME.pin, SO PIN $T/NAME.sopin
  local name=$1 label=$2
  mkdir -p "$T/$name/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$T/$name/tokens" > "$T/$name/softhsm2.conf"
  (umask 077; od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$T/$name.pin"; od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$T/$name.sopin")
  SOFTHSM2_CONF="$T/$name/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$T/$name.sopin")" --pin "$(cat "$T/$name.pin")" >/dev/null
}
device root hwca-root
device int hwca-intermediate
mkdir -p "$T/root-home" "$T/int-home"
on_root() { SOFTHSM2_CONF="$T/root/softhsm2.conf" HWCA_HOME="$T/root-home" "$@"; }
on_int() { SOFTHSM2_CONF="$T/int/softhsm2.conf" HWCA_HOME="$T/int-home" "$@"; }

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

cp -r "$HWCA_SOURCE_DIR/examples/ceremonies" "$T/c"
cd "$T/c"
ROOT_URI="pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE"
INT_URI="pkcs11:token=hwca-intermediate;object=intermediate?module-path=$SOFTHSM_MODULE"

# Dual control on the root token before the ceremony: 3 of 5 custodians unlock it.
on_root env HWCA_PIN="$(cat "$T/root.pin")" "$HWCA" custody split --key "$ROOT_URI" --shares 5 --threshold 3 \
  --out shares --so-pin-source "file:$T/root.sopin" >/dev/null
SHARES=shares/1,shares/3,shares/5

# A bad ceremony file is refused before anything happens.
printf 'ceremony: root\nkey: {uri: "%s", generate: ecdsa-p384}\noutputs: {folder: out/x}\nbogus: 1\n' "$ROOT_URI" > bad.yaml
expect_error "unknown field" on_root "$HWCA" ceremony run bad.yaml --pin-shares "$SHARES"
grep -q "bogus" "$T/.stderr" || fail "bad.yaml: $(cat "$T/.stderr")"; ok
expect_error "two shares" on_root "$HWCA" ceremony run root.yaml --pin-shares shares/1,shares/2
grep -q "1 more share needed" "$T/.stderr" || fail "two shares: $(cat "$T/.stderr")"; ok

# Pre-flight only.
out=$(on_root "$HWCA" ceremony run root.yaml --check --pin-shares "$SHARES")
grep -q "pre-flight: output folder .* is empty: ok" <<<"$out" || fail "--check output: $out"; ok
[ ! -e out/root ] || fail "--check created the output folder"; ok

# 1. Root ceremony (offline machine).
out=$(on_root "$HWCA" ceremony run root.yaml --pin-shares "$SHARES")
grep -q "step 4: issue-root-certificate" <<<"$out" || fail "root ceremony: $out"; ok
openssl x509 -in out/root/root.pem -noout -subject | grep -q "Example Root CA" || fail "root.pem"; ok
openssl verify -CAfile out/root/root.pem out/root/root.pem >/dev/null || fail "root.pem does not self-verify"; ok
grep -q '"never-extractable": "true"' out/root/transcript.json || fail "no token readings in the transcript"; ok
# Run again: the key exists and the output folder is not empty: refused in pre-flight.
expect_refused "second root ceremony" on_root "$HWCA" ceremony run root.yaml --pin-shares "$SHARES"
grep -q "pre-flight check failed" "$T/.stderr" || fail "rerun: $(cat "$T/.stderr")"; ok

# 2. Key ceremony (signing machine, intermediate token).
out=$(on_int env HWCA_PIN="$(cat "$T/int.pin")" "$HWCA" ceremony run key.yaml)
grep -q "make-csr" <<<"$out" || fail "key ceremony: $out"; ok
openssl req -in out/intermediate-key/intermediate.csr -noout -verify 2>&1 | grep -q "verify OK" || fail "intermediate CSR"; ok

# 3. Intermediate ceremony (offline machine): the root signs the CSR.
out=$(on_root "$HWCA" ceremony run intermediate.yaml --pin-shares "$SHARES")
grep -q "issue-intermediate-certificate" <<<"$out" || fail "intermediate ceremony: $out"; ok
openssl verify -CAfile out/root/root.pem out/intermediate/intermediate.pem >/dev/null || fail "intermediate does not verify"; ok
openssl x509 -in out/intermediate/intermediate.pem -noout -ext basicConstraints | grep -q "CA:TRUE, pathlen:0" || fail "pathlen"; ok

# 4. CRL ceremony (offline machine).
out=$(on_root "$HWCA" ceremony run crl.yaml --pin-shares "$SHARES")
grep -q "issue-crl: number 1" <<<"$out" || fail "crl ceremony: $out"; ok
openssl crl -in out/crl/root.crl -noout -CAfile out/root/root.pem -verify 2>&1 | grep -q "verify OK" || fail "root.crl"; ok

# 5. Unplug the root: its token folder goes to the safe.
mv "$T/root/tokens" "$T/offline-safe"
mkdir "$T/root/tokens"
expect_error "root token absent" on_root "$HWCA" key show --key "$ROOT_URI" --pin-shares "$SHARES"
grep -q "no token matches" "$T/.stderr" || fail "root absent: $(cat "$T/.stderr")"; ok

# 6. Leaf issuance with the intermediate only.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf.example -out leaf.csr 2>/dev/null
on_int env HWCA_PIN="$(cat "$T/int.pin")" "$HWCA" sign --ca out/intermediate/intermediate.pem --ca-key "$INT_URI" \
  --csr leaf.csr --profile server --hostname leaf.example --out leaf.pem >/dev/null
openssl verify -CAfile out/root/root.pem -untrusted out/intermediate/intermediate.pem leaf.pem >/dev/null || fail "leaf chain"; ok
openssl verify -crl_check -CAfile out/root/root.pem -CRLfile out/crl/root.crl out/intermediate/intermediate.pem >/dev/null \
  || fail "intermediate fails the root's CRL"; ok

# 7. Transcripts verify offline with the root certificate.
for c in root intermediate crl; do
  out=$("$HWCA" ceremony verify "out/$c/transcript.json" --root out/root/root.pem)
  grep -q "transcript verified" <<<"$out" || fail "$c transcript: $out"
  grep -q "the ceremony's key is the root certificate's key: OK" <<<"$out" || fail "$c transcript root check: $out"; ok
done
out=$("$HWCA" ceremony verify out/intermediate-key/transcript.json --root out/root/root.pem --cert out/intermediate/intermediate.pem)
grep -q "that certificate verifies against the root: OK" <<<"$out" || fail "key transcript: $out"; ok

# 8. One changed byte: anywhere in the transcript, or in an output it covers.
flip() {  # flip FILE OFFSET: replace the byte at OFFSET by another printable one
  python3 - "$1" "$2" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read())
b[off] = ord('A') if b[off] != ord('A') else ord('B')
open(p, 'wb').write(bytes(b))
PY
}
size=$(stat -c %s out/root/transcript.json)
for off in 0 10 $((size / 3)) $((size / 2)) $((size - 20)); do
  mkdir -p "tamper$off"; cp out/root/* "tamper$off/"
  flip "tamper$off/transcript.json" "$off"
  expect_error "byte $off changed" "$HWCA" ceremony verify "tamper$off/transcript.json" --root out/root/root.pem
done
# A changed value that keeps the JSON canonical: the signature fails.
mkdir tamper-value; cp out/root/* tamper-value/
sed -i 's/"action": "issue-root-certificate"/"action": "issue-root-certificatf"/' tamper-value/transcript.json
expect_error "value changed" "$HWCA" ceremony verify tamper-value/transcript.json --root out/root/root.pem
grep -q "signature does not verify" "$T/.stderr" || fail "value changed: $(cat "$T/.stderr")"; ok
# An output file changed.
mkdir tamper-output; cp out/root/* tamper-output/
flip tamper-output/root.pem 100
expect_error "output changed" "$HWCA" ceremony verify tamper-output/transcript.json --root out/root/root.pem
grep -q "root.pem does not match" "$T/.stderr" || fail "output changed: $(cat "$T/.stderr")"; ok
# Another root certificate.
expect_error "wrong root" "$HWCA" ceremony verify out/root/transcript.json --root out/intermediate/intermediate.pem

# 9. The root's audit chain: every ceremony step, checkpoints by the audit key, intact.
out=$(on_root "$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "root audit chain: $out"
grep -q "signed through entry" <<<"$out" || fail "no checkpoint: $out"; ok
out=$(on_int "$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "intermediate audit chain: $out"; ok
finish
