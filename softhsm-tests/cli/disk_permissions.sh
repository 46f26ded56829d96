#!/usr/bin/env bash
# A full disk, a read-only output folder, a ledger that cannot be written, and standard output that
# cannot be written: one clear error line, nothing half-written, the ledger intact, and a certificate
# that was recorded but never delivered marked orphaned. Tests run as root here, so permissions are
# tested by running hwca as nobody (setpriv); a full disk is a small tmpfs this test mounts (skipped,
# with a message, where the sandbox forbids mounting). The CA key is in a real SoftHSM2 token.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"

make_token disk
KEY=$(key_uri disk ca)
"$HWCA" key generate --key "$KEY" --algo ecdsa-p256 >/dev/null
"$HWCA" ca init --key "$KEY" --subject "/CN=disk test CA" --out ca.pem >/dev/null
printf '{"CN":"leaf.example","hosts":["leaf.example"],"key":{"algo":"ecdsa","size":256}}\n' > leaf.json
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=req \
  -out req.csr 2>/dev/null
gencert() { "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" "$@"; }
rows() { sqlite3 "$1" 'SELECT status FROM certificates' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'; }
intact() {  # intact LEDGER: SQLite's own check, and hwca's audit chain
  [ "$(sqlite3 "$1" 'PRAGMA integrity_check')" = ok ] || fail "$1: integrity_check failed"
  HWCA_HOME=$(dirname "$1") "$HWCA" audit verify >/dev/null 2>&1 || fail "$1: audit verify failed: $(HWCA_HOME=$(dirname "$1") "$HWCA" audit verify 2>&1)"
}
# no_partial DIR: nothing left in DIR but what is named after it (no temporaries).
no_temporaries() { [ -z "$(find "$1" -name '*.tmp*' -o -name '.hwca-*' | head -1)" ] || fail "temporaries left in $1: $(ls -la "$1")"; }

# --- standard output that cannot be written ---------------------------------------------------------
expect_error "gencert to /dev/full" sh -c "exec \"\$0\" gencert -ca \"$T/ca.pem\" -ca-key \"$KEY\" leaf.json > /dev/full" "$HWCA"
grep -q "cannot write to standard output; certificate [0-9a-f]* is in the ledger, marked orphaned" "$T/.stderr" ||
  fail "the /dev/full error does not say the certificate was orphaned: $(cat "$T/.stderr")"
[ "$(rows "$HWCA_HOME/ledger.db")" = "issued=1 orphaned=1 " ] || fail "ledger after /dev/full: $(rows "$HWCA_HOME/ledger.db")"
intact "$HWCA_HOME/ledger.db"
ok

# --- a full disk (tmpfs) -----------------------------------------------------------------------------
mkdir -p full
if mount -t tmpfs -o size=256k,mode=0755 tmpfs "$T/full" 2>/dev/null; then
  _mounted="$T/full"
  # Unmount before lib.bash's cleanup removes $T, keeping the test's exit status for it.
  trap '_rc=$?; [ -z "$_mounted" ] || umount "$_mounted" 2>/dev/null; (exit $_rc); _cleanup' EXIT
  # Fill it: nothing more fits.
  dd if=/dev/zero of=full/filler bs=1k 2>/dev/null || true  # until ENOSPC
  before=$(rows "$HWCA_HOME/ledger.db")
  expect_error "gencert --bare onto a full disk" gencert --bare "$T/full/leaf" leaf.json
  grep -q "marked orphaned" "$T/.stderr" || fail "no orphan note: $(cat "$T/.stderr")"
  [ ! -e full/leaf.pem ] && [ ! -e full/leaf-key.pem ] && [ ! -e full/leaf.csr ] || fail "a partial output on the full disk: $(ls -la full)"
  no_temporaries full
  intact "$HWCA_HOME/ledger.db"
  ok
  expect_error "sign -out onto a full disk" "$HWCA" sign -ca "$T/ca.pem" -ca-key "$KEY" --out "$T/full/s.pem" req.csr
  [ ! -e full/s.pem ] || fail "s.pem exists on the full disk"
  no_temporaries full
  ok
  # The ledger itself on the full disk: refused before anything is handed out.
  mkdir -p full/home
  rm -f full/filler
  HWCA_HOME="$T/full/home" "$HWCA" ledger list >/dev/null  # creates the ledger while there is room
  dd if=/dev/zero of=full/filler bs=1k 2>/dev/null || true
  out=$(HWCA_HOME="$T/full/home" "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" leaf.json 2> err.txt) && fail "gencert with a full ledger disk succeeded"
  [ -z "$out" ] || fail "gencert printed a certificate it could not record"
  [ "$(grep -c . err.txt)" = 1 ] && grep -q '^hwca: error: .*ledger' err.txt || fail "full ledger disk: $(cat err.txt)"
  rm -f full/filler
  [ "$(sqlite3 full/home/ledger.db 'SELECT count(*) FROM certificates')" = 0 ] || fail "a row was recorded on the full disk"
  intact "$T/full/home/ledger.db"
  ok
  umount "$T/full" || fail "umount"
  _mounted=""
else
  echo "disk_permissions.sh: SKIPPED the full-disk part: this sandbox does not allow mounting a tmpfs"
fi

# --- as an unprivileged user: a read-only output folder, a ledger that cannot be written ---------------
chmod 755 "$T"
chown -R nobody:nogroup "$T/softhsm" "$T/disk.pin"
mkdir -p nobody-home readonly-out
chown nobody:nogroup nobody-home
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups env HWCA_HOME="$T/nobody-home" "$@"; }
as_nobody "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" leaf.json > /dev/null || fail "nobody cannot issue at all: check the setup"
ok
expect_error "gencert --bare into a folder nobody cannot write" as_nobody "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" --bare "$T/readonly-out/leaf" leaf.json
[ -z "$(ls -A readonly-out)" ] || fail "something was written into the read-only folder: $(ls -la readonly-out)"
ok
expect_error "sign --out into a folder nobody cannot write" as_nobody "$HWCA" sign -ca "$T/ca.pem" -ca-key "$KEY" --out "$T/readonly-out/s.pem" req.csr
[ -z "$(ls -A readonly-out)" ] || fail "something was written into the read-only folder"
ok
# A ledger file (and folder) owned by root, read-only for nobody.
mkdir -p root-home
HWCA_HOME="$T/root-home" "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" leaf.json > /dev/null
chmod 755 root-home
chmod 644 root-home/ledger.db
before=$(sqlite3 root-home/ledger.db 'SELECT count(*) FROM certificates')
sum=$(sha256sum root-home/ledger.db | cut -d' ' -f1)
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups env HWCA_HOME="$T/root-home" \
  "$HWCA" gencert -ca "$T/ca.pem" -ca-key "$KEY" leaf.json 2> err.txt) && fail "gencert with a read-only ledger succeeded"
[ -z "$out" ] || fail "a certificate was printed that the ledger could not record"
[ "$(grep -c . err.txt)" = 1 ] && grep -q '^hwca: error: .*ledger' err.txt || fail "read-only ledger: $(cat err.txt)"
[ "$(sha256sum root-home/ledger.db | cut -d' ' -f1)" = "$sum" ] || fail "the read-only ledger changed"
[ "$(sqlite3 root-home/ledger.db 'SELECT count(*) FROM certificates')" = "$before" ] || fail "rows changed"
intact "$T/root-home/ledger.db"
ok

finish
