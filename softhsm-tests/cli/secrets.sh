#!/usr/bin/env bash
# No PIN or auth value in /proc/<pid>/cmdline, in the environment (when it came from a file), in any log
# line, in the ledger or its audit chain; core dumps disabled while hwca holds a PIN (RLIMIT_CORE 0,
# not dumpable), and a PIN rebuilt from custodians' shares kept in locked memory (VmLck). Checked on a
# long-running `hwca serve` whose CA key is in a real SoftHSM2 token, opened with a PIN from a file,
# from HWCA_PIN, and from Shamir shares, and on one whose CA key is in swtpm with its auth value from a
# file; and on every command's stderr, including a wrong PIN.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash"
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash"
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-tpm2.bash"

serve_ca
PIN=$(cat "$T/serve-ca.pin")
SO_PIN=$(cat "$T/serve-ca.sopin")
[ "${#PIN}" -ge 16 ] || fail "the test PIN is too short to search for"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=leaf \
  -out leaf.csr 2>/dev/null
jq -n --arg csr "$(cat leaf.csr)" '{certificate_request: $csr}' > sign.json

# no_secret WHERE FILE: FILE does not contain the PIN, the SO PIN, or ASCII-hex/base64 forms of them.
no_secret() {
  local where=$1 file=$2 s
  for s in "$PIN" "$SO_PIN" "$(printf '%s' "$PIN" | base64 -w0)" "$(printf '%s' "$PIN" | od -An -tx1 | tr -d ' \n')"; do
    if grep -aqF -- "$s" "$file"; then fail "a secret appears in $where"; fi
  done
}
# check_process PID WHAT: cmdline, core dump limit and dumpability of a running hwca.
check_process() {
  local pid=$1 what=$2
  tr '\0' ' ' < "/proc/$pid/cmdline" > cmdline.txt
  no_secret "$what's /proc/$pid/cmdline" cmdline.txt
  awk '/^Max core file size/ {print $5, $6}' "/proc/$pid/limits" > core.txt
  [ "$(cat core.txt)" = "0 0" ] || fail "$what: core dumps are not disabled: $(grep 'core file' "/proc/$pid/limits")"
  ok
}

# --- a PIN from a file ----------------------------------------------------------------------------
# serve_port: PORT from the log of the server serve_start (or the --pin-shares start below) began.
serve_port() {
  PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' serve.err | tail -1)
  [ -n "$PORT" ] || fail "no port in the log: $(cat serve.err)"
}
serve_start -port 0 -ca "$T/ca.pem" -ca-key "$CA_KEY"
serve_port
check_process "$SERVE_PID" "serve (pin-source=file)"
tr '\0' '\n' < "/proc/$SERVE_PID/environ" > environ.txt
no_secret "serve's environment" environ.txt
for i in 1 2 3; do
  [ "$(api sign sign.json)" = 200 ] || fail "sign $i: $(cat resp.json)"
done
ok
serve_stop

# --- HWCA_PIN, and a wrong PIN -------------------------------------------------------------------------
KEY_NOPIN="${CA_KEY%%&pin-source=*}"
HWCA_PIN="$PIN" serve_start -port 0 -ca "$T/ca.pem" -ca-key "$KEY_NOPIN"
serve_port
check_process "$SERVE_PID" "serve (HWCA_PIN)"
[ "$(api sign sign.json)" = 200 ] || fail "sign with HWCA_PIN: $(cat resp.json)"
serve_stop
printf 'not-the-pin-%s' "$RANDOM" > wrong.pin
WRONG=$(cat wrong.pin)
out=$("$HWCA" sign -ca ca.pem -ca-key "${KEY_NOPIN}&pin-source=file:$T/wrong.pin" leaf.csr 2> wrong.err) && fail "a wrong PIN signed"
grep -q "^hwca: error: " wrong.err || fail "wrong PIN: $(cat wrong.err)"
! grep -qF -- "$WRONG" wrong.err || fail "the wrong PIN is echoed in the error"
no_secret "the wrong-PIN error" wrong.err
ok

# --- a PIN rebuilt from custodians' shares: kept in locked memory while the server runs ----------------
"$HWCA" custody split --key "$CA_KEY" --so-pin-source "file:$T/serve-ca.sopin" --shares 3 --threshold 2 \
  --out shares > custody.out 2> custody.err || fail "custody split: $(cat custody.err)"
no_secret "custody split's output" custody.out
no_secret "custody split's stderr" custody.err
# The old PIN no longer opens the key: the shares do.
"$HWCA" --pin-shares "shares/1,shares/3" serve -port 0 -ca "$T/ca.pem" -ca-key "$KEY_NOPIN" 2> serve.err &
SERVE_PID=$!
_bg_pids+=("$SERVE_PID")
for i in $(seq 1 150); do grep -q 'listening on' serve.err && break; sleep 0.1; done
grep -q 'listening on' serve.err || fail "serve with --pin-shares did not start: $(cat serve.err)"
serve_port
check_process "$SERVE_PID" "serve (--pin-shares)"
vmlck=$(awk '/^VmLck:/ {print $2}' "/proc/$SERVE_PID/status")
# An ASan build has __asan_init in its symbols: imported from libasan.so (GCC) or linked in statically
# (clang, where ldd shows no libasan).
if grep -qa __asan_init "$HWCA"; then
  # AddressSanitizer intercepts mlock() and makes it a no-op: the Release suite checks locked memory.
  echo "secrets.sh: VmLck not checked under AddressSanitizer (its mlock interceptor does nothing)"
else
  [ "${vmlck:-0}" -gt 0 ] || fail "the rebuilt PIN is not in locked memory (VmLck ${vmlck:-0} kB)"
fi
[ "$(api sign sign.json)" = 200 ] || fail "sign with --pin-shares: $(cat resp.json)"
serve_stop
ok

# --- a TPM key's auth value (swtpm) ---------------------------------------------------------------------
start_swtpm secrets
(umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > tpm.auth)
TPM_AUTH=$(cat tpm.auth)
TPM_KEY=$(tpm_file_uri "$T/tpm-ca.tss2.pem" "$T/tpm.auth")
"$HWCA" key generate --key "$TPM_KEY" --algo ecdsa-p256 > tpm-gen.out 2> tpm-gen.err || fail "TPM key generate: $(cat tpm-gen.err)"
"$HWCA" ca init --key "$TPM_KEY" --subject "/CN=tpm secrets CA" --out tpm-ca.pem > tpm-ca.out 2> tpm-ca.err || fail "TPM ca init: $(cat tpm-ca.err)"
grep -aqF -- "$TPM_AUTH" tpm-ca.tss2.pem && fail "the auth value is in the key blob"
serve_start -port 0 -ca "$T/tpm-ca.pem" -ca-key "$TPM_KEY"
serve_port
check_process "$SERVE_PID" "serve (TPM key, auth from a file)"
tr '\0' '\n' < "/proc/$SERVE_PID/environ" > tpm-environ.txt
[ "$(api sign sign.json)" = 200 ] || fail "sign with the TPM key: $(cat resp.json)"
serve_stop
for f in tpm-gen.out tpm-gen.err tpm-ca.out tpm-ca.err serve.err tpm-environ.txt; do
  ! grep -aqF -- "$TPM_AUTH" "$f" || fail "the TPM auth value appears in $f"
done
sqlite3 "$HWCA_HOME/ledger.db" .dump | grep -aqF -- "$TPM_AUTH" && fail "the TPM auth value is in the ledger"
ok

# --- nothing in the logs, the ledger or the audit chain ------------------------------------------------
cat "$T"/*.err > all-stderr.txt 2>/dev/null || true
no_secret "stderr of the commands" all-stderr.txt
sqlite3 "$HWCA_HOME/ledger.db" .dump > ledger.sql
no_secret "the ledger (certificates, events, audit chain)" ledger.sql
for f in shares/*; do
  no_secret "share file $f" "$f"  # a share is not the PIN
done
ok

finish
