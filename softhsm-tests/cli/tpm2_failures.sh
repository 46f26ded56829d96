#!/usr/bin/env bash
# TPM 2.0 failure cases with the hwca binary on swtpm: each one is a single `hwca: error:` line, nothing on
# stdout and no output file. An occupied handle, an existing blob, an algorithm the TPM lacks, a wrong
# auth value (one dictionary-attack count, no retries), a blob from another TPM, no TPM at all, and swtpm
# SIGKILLed while certificates are being issued (every certificate written verifies; the rest fail cleanly).
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-tpm2.bash" || exit 1
export TSS2_LOG=all+NONE

start_swtpm one
ONE_PID=$SWTPM_PID ONE_PORT=$SWTPM_PORT ONE_TCTI=$SWTPM_TCTI
(umask 077; printf 'right\n' > "$T/auth"; printf 'wrong\n' > "$T/wrong")
HKEY=$(tpm_handle_uri 0x81000100 "$T/auth")
FKEY=$(tpm_file_uri "$T/ca.tss2.pem")
"$HWCA" key generate --key "$HKEY" --algo ecdsa-p256 > /dev/null || fail "key generate (handle)"
"$HWCA" key generate --key "$FKEY" --algo ecdsa-p384 > /dev/null || fail "key generate (file)"
"$HWCA" ca init --key "$HKEY" --subject '/CN=TPM Root' --out root.pem > /dev/null || fail "ca init"
ok

# Never overwritten.
expect_error "occupied handle" "$HWCA" key generate --key "$HKEY" --algo rsa-2048
grep -q 'TPM handle 0x81000100 is already occupied' "$T/.stderr" && grep -q 'tpm2_evictcontrol -C o -c 0x81000100' "$T/.stderr" ||
  fail "occupied handle message: $(cat "$T/.stderr")"
before=$(sha256sum < "$T/ca.tss2.pem")
expect_error "existing blob" "$HWCA" key generate --key "$FKEY" --algo ecdsa-p256
[ "$(sha256sum < "$T/ca.tss2.pem")" = "$before" ] || fail "the blob changed"
grep -q 'already exists' "$T/.stderr" || fail "existing blob message: $(cat "$T/.stderr")"

# What the TPM does not support.
expect_error "rsa-4096 on swtpm" "$HWCA" key generate --key "$(tpm_file_uri "$T/big.tss2.pem")" --algo rsa-4096
grep -q 'the TPM does not support rsa-4096 keys (Esys_TestParms: 0x' "$T/.stderr" || fail "rsa-4096 message: $(cat "$T/.stderr")"
[ ! -e "$T/big.tss2.pem" ] || fail "a blob was written for an unsupported algorithm"

# A wrong auth value: one clear error, one dictionary-attack count (no retry loop).
[ "$(tpm_lockout_counter)" = 0x0 ] || fail "lockout counter before: $(tpm_lockout_counter)"
expect_error "wrong auth" "$HWCA" ca init --key "$(tpm_handle_uri 0x81000100 "$T/wrong")" --subject /CN=x --out wrong.pem
grep -q 'Esys_Sign failed: 0x0000098e (tpm:session(1):.*): wrong auth value for TPM handle 0x81000100' "$T/.stderr" ||
  fail "wrong auth message: $(cat "$T/.stderr")"
[ ! -e wrong.pem ] || fail "wrong.pem written"
[ "$(tpm_lockout_counter)" = 0x1 ] || fail "lockout counter after one wrong auth: $(tpm_lockout_counter)"
ok
# The right one still works.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf -out leaf.csr 2>/dev/null
"$HWCA" sign --ca root.pem --ca-key "$HKEY" --out ok.pem leaf.csr > /dev/null || fail "sign with the right auth"
openssl verify -CAfile root.pem ok.pem > /dev/null || fail "ok.pem does not verify"
ok

# A blob from another TPM.
start_swtpm two
expect_error "blob from another TPM" "$HWCA" ca init --key "$(tpm_file_uri "$T/ca.tss2.pem")" --subject /CN=x --out other.pem
grep -q 'Esys_Load failed: 0x.*this TPM cannot load key file .*ca.tss2.pem (it was made by another TPM' "$T/.stderr" ||
  fail "foreign blob message: $(cat "$T/.stderr")"
[ ! -e other.pem ] || fail "other.pem written"
kill_swtpm "$SWTPM_PID"
SWTPM_PID=$ONE_PID SWTPM_PORT=$ONE_PORT SWTPM_TCTI=$ONE_TCTI

# swtpm SIGKILLed while certificates are being issued one after another: every certificate that was
# written verifies; every command after the kill fails with one error line and writes nothing.
(
  for i in $(seq 1 40); do
    "$HWCA" sign --ca root.pem --ca-key "$HKEY" --out "cert-$i.pem" leaf.csr > "out-$i" 2> "err-$i" || true
  done
) &
LOOP=$!
for i in $(seq 1 300); do [ -e cert-3.pem ] && break; sleep 0.05; done
[ -e cert-3.pem ] || fail "no certificates were issued before the kill"
kill_swtpm "$ONE_PID"
wait "$LOOP"
good=0 failed=0
for i in $(seq 1 40); do
  if [ -e "cert-$i.pem" ]; then
    openssl verify -CAfile root.pem "cert-$i.pem" > /dev/null || fail "cert-$i.pem does not verify"
    [ ! -s "err-$i" ] || fail "cert-$i.pem was written but the command printed: $(cat "err-$i")"
    good=$((good + 1))
  else
    [ "$(grep -c . "err-$i")" = 1 ] && grep -q '^hwca: error: ' "err-$i" || fail "command $i after the kill: $(cat "err-$i")"
    [ ! -s "out-$i" ] || fail "command $i printed to stdout after the kill"
    failed=$((failed + 1))
  fi
done
[ "$good" -ge 3 ] && [ "$failed" -ge 1 ] || fail "expected issued and failed commands: $good issued, $failed failed"
ls | grep -q '\.tmp' && fail "temporary files left: $(ls)"
grep -q "cannot reach the TPM through TCTI '$ONE_TCTI'" err-40 || fail "error after the kill: $(cat err-40)"
ok

# swtpm back (same state): the persistent key is still there and signs.
restart_swtpm one
"$HWCA" sign --ca root.pem --ca-key "$HKEY" --out after.pem leaf.csr > /dev/null || fail "sign after the restart"
openssl verify -CAfile root.pem after.pem > /dev/null || fail "after.pem does not verify"
ok

finish
