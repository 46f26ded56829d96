#!/usr/bin/env bash
# Dual control on a SoftHSM2 token: `hwca custody split` replaces the user and SO PINs with fresh random
# ones written as Shamir shares; every 3-of-5 subset unlocks the key (--pin-shares), every 2-subset does
# not and says how many shares are missing; a corrupted share is named; the old PINs open nothing.
source "$(dirname "$0")/lib.bash"

make_token hwca-root
ROOT=$(key_uri hwca-root root)
BARE="pkcs11:token=hwca-root;object=root?module-path=$SOFTHSM_MODULE"
"$HWCA" key generate --key "$ROOT" --algo ecdsa-p256 >/dev/null

expect_error "threshold above shares" "$HWCA" custody split --key "$ROOT" --shares 3 --threshold 4 --out shares --so-pin-source "file:$T/hwca-root.sopin"
expect_error "no SO PIN" "$HWCA" custody split --key "$ROOT" --shares 5 --threshold 3 --out shares
printf 'wrong-so-pin' > "$T/wrong.sopin"
expect_error "wrong SO PIN" "$HWCA" custody split --key "$ROOT" --shares 5 --threshold 3 --out shares --so-pin-source "file:$T/wrong.sopin"
[ -z "$(ls -A shares 2>/dev/null)" ] || fail "shares were left behind after a refused split"; ok
# Nothing changed: the old PIN still works.
"$HWCA" key show --key "$ROOT" >/dev/null || fail "the old PIN stopped working after a refused split"; ok

out=$("$HWCA" custody split --key "$ROOT" --shares 5 --threshold 3 --out shares --so-shares 4 --so-threshold 2 \
        --so-out so-shares --so-pin-source "file:$T/hwca-root.sopin")
grep -q "user PIN and SO PIN replaced" <<<"$out" || fail "custody split output: $out"; ok
for i in 1 2 3 4 5; do
  [ "$(stat -c %a "shares/$i")" = 600 ] || fail "share $i is not 0600"
done; ok
[ "$(ls so-shares | wc -l)" = 4 ] || fail "expected 4 SO shares"; ok
[ "$(stat -c %a shares)" = 700 ] || fail "share folder is not 0700"; ok
grep -q '"threshold": 3' shares/1 || fail "share file has no threshold"; ok
grep -q '"checksum"' shares/1 || fail "share file has no checksum"; ok
out=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT kind FROM audit_events")
grep -q custody-split <<<"$out" || fail "no custody-split audit event"; ok

# The old user PIN (still in the URI's pin-source file) opens nothing now.
expect_error "old user PIN" "$HWCA" key show --key "$ROOT"
grep -q CKR_PIN_INCORRECT "$T/.stderr" || fail "old PIN: $(cat "$T/.stderr")"; ok

# Every 3-of-5 subset unlocks; every 2-subset does not.
n3=0
for a in 1 2 3 4 5; do for b in $(seq $((a + 1)) 5); do
  expect_error "2 shares $a,$b" "$HWCA" key show --key "$BARE" --pin-shares "shares/$a,shares/$b"
  grep -q "2 of 3 shares given for user PIN of token hwca-root: 1 more share needed" "$T/.stderr" || fail "2-subset message: $(cat "$T/.stderr")"
  for c in $(seq $((b + 1)) 5); do
    "$HWCA" key show --key "$BARE" --pin-shares "shares/$c,shares/$a,shares/$b" >/dev/null || fail "3-subset $a,$b,$c does not unlock"
    n3=$((n3 + 1)); ok
  done
done; done
[ "$n3" = 10 ] || fail "expected 10 subsets, ran $n3"; ok
expect_error "1 share" "$HWCA" key show --key "$BARE" --pin-shares shares/4
grep -q "1 of 3 shares given for user PIN of token hwca-root: 2 more shares needed" "$T/.stderr" || fail "1 share: $(cat "$T/.stderr")"; ok

# The issue's own example: any command that opens a key takes --pin-shares, after the subcommand too.
"$HWCA" ca init --key "$BARE" --subject '/CN=Custody Root' --out root.pem --pin-shares shares/1,shares/3,shares/5 >/dev/null
openssl x509 -in root.pem -noout -subject | grep -q "Custody Root" || fail "ca init with --pin-shares"; ok

# A corrupted share is named.
cp shares/2 bad-share
python3 - bad-share <<'PY'
import sys
p = sys.argv[1]
t = open(p).read()
i = t.index('"value": "') + 10
t = t[:i] + ('1' if t[i] == '0' else '0') + t[i + 1:]
open(p, 'w').write(t)
PY
expect_error "corrupted share" "$HWCA" key show --key "$BARE" --pin-shares shares/1,bad-share,shares/3
grep -q "share file bad-share is corrupted (checksum mismatch)" "$T/.stderr" || fail "corrupt share: $(cat "$T/.stderr")"; ok
expect_error "missing share file" "$HWCA" key show --key "$BARE" --pin-shares shares/1,shares/9,shares/3
expect_error "SO share for user PIN" "$HWCA" key show --key "$BARE" --pin-shares shares/1,so-shares/so-1,shares/3
grep -q "belongs to another secret" "$T/.stderr" || fail "mixed set: $(cat "$T/.stderr")"; ok

# The SO PIN: its own 2-of-4 shares rebuild it; the old SO PIN is refused by the token.
"$HWCA" custody check --key "$BARE" --shares so-shares/so-2,so-shares/so-4 --so | grep -q "rebuild the SO PIN" || fail "SO shares"; ok
"$HWCA" custody check --key "$BARE" --shares shares/2,shares/4,shares/5 | grep -q "rebuild the user PIN" || fail "user shares check"; ok
expect_error "user shares as SO" "$HWCA" custody check --key "$BARE" --shares shares/2,shares/4,shares/5 --so
if pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-root --login --login-type so --so-pin "$(cat "$T/hwca-root.sopin")" --list-objects >/dev/null 2>&1; then
  fail "the old SO PIN still logs in"
fi; ok

# A second split, with the current PINs taken from shares.
"$HWCA" custody split --key "$BARE" --pin-shares shares/1,shares/2,shares/3 --so-pin-shares so-shares/so-1,so-shares/so-3 \
  --shares 3 --threshold 2 --out shares2 >/dev/null
"$HWCA" key show --key "$BARE" --pin-shares shares2/1,shares2/3 >/dev/null || fail "second split's shares"; ok
expect_error "first split's shares after the second" "$HWCA" key show --key "$BARE" --pin-shares shares/1,shares/2,shares/3
"$HWCA" custody check --key "$BARE" --shares shares2/so-1,shares2/so-2 --so >/dev/null || fail "second SO split"; ok
out=$("$HWCA" audit verify)
grep -q "audit chain intact" <<<"$out" || fail "audit verify: $out"; ok
finish
