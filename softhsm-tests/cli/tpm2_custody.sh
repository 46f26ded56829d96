#!/usr/bin/env bash
# Dual control over TPM keys on swtpm: `hwca custody split` gives a tpm2: key (a TSS2 PRIVATE KEY blob and
# a persistent handle) a fresh random auth value (Esys_ObjectChangeAuth) written as 3-of-5 Shamir shares.
# Every 3-of-5 subset opens the key and signs a certificate; every 2-subset is refused with how many
# shares are missing; the old auth value opens nothing (an older copy of the blob still does, as
# docs/ceremony.md warns); the handle key keeps its handle; a corrupted share is named.
# Each swtpm sees at most two wrong auth values (its dictionary-attack lockout starts at three).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/lib-tpm2.bash"

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf.example -out leaf.csr 2>/dev/null
(umask 077; printf 'initial-auth-value' > old.auth)

# custody_of NAME URI-WITHOUT-AUTH: the whole check on one key, on its own swtpm.
custody_of() {
  local name=$1 uri=$2 a b c n3=0
  "$HWCA" key generate --key "$uri&pin-source=file:$T/old.auth" --algo ecdsa-p256 >/dev/null
  "$HWCA" ca init --key "$uri&pin-source=file:$T/old.auth" --subject "/CN=$name CA" --out "$name-ca.pem" >/dev/null
  openssl x509 -in "$name-ca.pem" -noout -pubkey > "$name-before.pub"

  # Refused before anything changes: SO options (a TPM key has none), a too long auth value, a wrong
  # current auth value (one TPM failure); no share is left behind.
  expect_error "$name: --so-pin-source" "$HWCA" custody split --key "$uri&pin-source=file:$T/old.auth" --shares 5 \
    --threshold 3 --out "$name-shares" --so-pin-source "file:$T/old.auth"
  grep -q "a TPM key has no SO PIN" "$T/.stderr" || fail "$name: --so: $(cat "$T/.stderr")"; ok
  expect_error "$name: --pin-length 40" "$HWCA" custody split --key "$uri&pin-source=file:$T/old.auth" --shares 5 \
    --threshold 3 --out "$name-shares" --pin-length 40
  grep -q "at most 32 bytes" "$T/.stderr" || fail "$name: --pin-length: $(cat "$T/.stderr")"; ok
  printf 'not-the-auth' > wrong.auth
  expect_error "$name: wrong current auth" "$HWCA" custody split --key "$uri&pin-source=file:$T/wrong.auth" --shares 5 \
    --threshold 3 --out "$name-shares"
  grep -q "wrong auth value" "$T/.stderr" || fail "$name: wrong auth: $(cat "$T/.stderr")"; ok
  [ -z "$(ls -A "$name-shares" 2>/dev/null)" ] || fail "$name: shares left behind after a refused split"; ok
  "$HWCA" custody check --key "$uri" --shares "$T/old.auth" >/dev/null 2>&1 && fail "$name: a non-share file accepted"; ok

  out=$("$HWCA" custody split --key "$uri&pin-source=file:$T/old.auth" --shares 5 --threshold 3 --out "$name-shares")
  grep -q "auth value replaced (32 random characters) and split" <<<"$out" || fail "$name: split: $out"; ok
  for i in 1 2 3 4 5; do [ "$(stat -c %a "$name-shares/$i")" = 600 ] || fail "$name: share $i is not 0600"; done; ok
  grep -q '"threshold": 3' "$name-shares/1" || fail "$name: no threshold in the share"; ok

  # Every 3-of-5 subset opens the key and signs a leaf that verifies; every 2-subset is refused.
  for a in 1 2 3 4 5; do for b in $(seq $((a + 1)) 5); do
    expect_error "$name: 2 shares $a,$b" "$HWCA" sign --ca "$name-ca.pem" --ca-key "$uri" --csr leaf.csr --profile server \
      --hostname leaf.example --out x.pem --pin-shares "$name-shares/$a,$name-shares/$b"
    grep -q "2 of 3 shares given for auth value of TPM key ${uri%%\?*}: 1 more share needed" "$T/.stderr" ||
      fail "$name: 2-subset message: $(cat "$T/.stderr")"
    for c in $(seq $((b + 1)) 5); do
      "$HWCA" sign --ca "$name-ca.pem" --ca-key "$uri" --csr leaf.csr --profile server --hostname leaf.example \
        --out "$name-leaf-$a$b$c.pem" --pin-shares "$name-shares/$c,$name-shares/$a,$name-shares/$b" >/dev/null ||
        fail "$name: 3-subset $a,$b,$c does not unlock"
      openssl verify -CAfile "$name-ca.pem" "$name-leaf-$a$b$c.pem" >/dev/null || fail "$name: leaf $a$b$c does not verify"
      n3=$((n3 + 1)); ok
    done
  done; done
  [ "$n3" = 10 ] || fail "$name: expected 10 subsets, ran $n3"; ok
  expect_error "$name: 1 share" "$HWCA" custody check --key "$uri" --shares "$name-shares/4"
  grep -q "1 of 3 shares given for auth value of TPM key ${uri%%\?*}: 2 more shares needed" "$T/.stderr" || fail "$name: 1 share"; ok
  "$HWCA" custody check --key "$uri" --shares "$name-shares/2,$name-shares/4,$name-shares/5" | grep -q "rebuild the auth value" ||
    fail "$name: custody check"; ok
  expect_error "$name: --so check" "$HWCA" custody check --key "$uri" --shares "$name-shares/2,$name-shares/4,$name-shares/5" --so

  # A corrupted share is named.
  cp "$name-shares/2" bad-share
  sed -i 's/"index": 2/"index": 7/' bad-share
  expect_error "$name: corrupted share" "$HWCA" custody check --key "$uri" --shares "$name-shares/1,bad-share,$name-shares/3"
  grep -q "share file bad-share is corrupted (checksum mismatch)" "$T/.stderr" || fail "$name: corrupt share: $(cat "$T/.stderr")"; ok

  # The old auth value opens nothing now (the second TPM failure on this swtpm).
  expect_error "$name: old auth" "$HWCA" sign --ca "$name-ca.pem" --ca-key "$uri&pin-source=file:$T/old.auth" --csr leaf.csr \
    --profile server --hostname leaf.example --out x.pem
  grep -q "wrong auth value" "$T/.stderr" || fail "$name: old auth: $(cat "$T/.stderr")"; ok

  # Same key: the CA certificate made before the split still matches it.
  "$HWCA" sign --ca "$name-ca.pem" --ca-key "$uri" --csr leaf.csr --profile server --hostname leaf.example --out after.pem \
    --pin-shares "$name-shares/1,$name-shares/2,$name-shares/3" >/dev/null
  openssl verify -CAfile "$name-ca.pem" after.pem >/dev/null || fail "$name: the key changed"; ok
}

# A TSS2 PRIVATE KEY blob.
start_swtpm blob
BLOB_TCTI=$SWTPM_TCTI
custody_of blob "tpm2:file=$T/ca.tss2.pem?tcti=$BLOB_TCTI"
# An older copy of the blob (a backup made before the split) still opens with the old auth value: the
# runbook's warning. The replaced file itself no longer holds the old bytes.
"$HWCA" key generate --key "tpm2:file=$T/second.tss2.pem?tcti=$BLOB_TCTI&pin-source=file:$T/old.auth" --algo ecdsa-p256 >/dev/null
cp second.tss2.pem second-backup.tss2.pem
"$HWCA" custody split --key "tpm2:file=$T/second.tss2.pem?tcti=$BLOB_TCTI&pin-source=file:$T/old.auth" --shares 3 --threshold 2 \
  --out second-shares >/dev/null
"$HWCA" ca init --key "tpm2:file=$T/second-backup.tss2.pem?tcti=$BLOB_TCTI&pin-source=file:$T/old.auth" --subject /CN=stale \
  --out stale.pem >/dev/null || fail "the older copy of the blob did not open with the old auth value"; ok
cmp -s second.tss2.pem second-backup.tss2.pem && fail "the blob was not replaced"; ok
[ "$(stat -c %a second.tss2.pem)" = 600 ] || fail "the replaced blob is not 0600"; ok
[ -z "$(ls second.tss2.pem.tmp.* 2>/dev/null)" ] || fail "a temporary file was left next to the blob"; ok

# A persistent handle: the key keeps its handle, the staging handle is free again.
start_swtpm handle
HANDLE_URI=$(tpm_handle_uri 0x81000100)
custody_of handle "$HANDLE_URI"
handles=$(TPM2TOOLS_TCTI=$SWTPM_TCTI tpm2_getcap handles-persistent)
grep -q 0x81000100 <<<"$handles" || fail "the key left its handle: $handles"; ok
grep -q 0x81400100 <<<"$handles" && fail "the staging handle is still occupied: $handles"; ok
out=$("$HWCA" custody resume --key "$HANDLE_URI" --pin-shares handle-shares/1,handle-shares/2,handle-shares/3)
grep -q "no interrupted custody split" <<<"$out" || fail "resume after a complete split: $out"; ok

# The splits are in the audit chain (ids and thresholds, never a share).
out=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT detail FROM audit_events WHERE kind = 'custody-split'")
[ "$(grep -c 'custody-split\|threshold' <<<"$out")" -ge 3 ] || fail "custody-split events: $out"; ok
grep -q '"value"' <<<"$out" && fail "a share value reached the audit chain"; ok
out=$("$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "audit verify: $out"; ok
finish
