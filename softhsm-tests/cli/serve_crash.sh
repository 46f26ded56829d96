#!/usr/bin/env bash
# hwca serve killed with SIGKILL at random moments, 20 times, while two keep-alive clients sign through
# it (authsign, RSA-2048 CA key in a real SoftHSM2 token, SQLite ledger). After every kill: the ledger
# passes SQLite's integrity check and `hwca audit verify`; every certificate a client received is in the
# ledger; no serial appears twice. The server then starts again on the same ledger and signs.
# Certificates recorded but not received (in flight when the process died) are counted: the ledger has
# them, the client never saw them — recorded before handed out, never the other way round.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash"
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash"

serve_ca
cat > ca-config.json <<EOF
{"signing":{"default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}},
 "auth_keys":{"key1":{"type":"standard","key":"$AUTH_KEY_HEX"}}}
EOF
make_csrs csrs 8
free_port PORT
DB="$HWCA_HOME/ledger.db"
: > received.serials
: > received.pem

for round in $(seq 1 20); do
  serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" --workers 2
  pids=()
  for c in 1 2; do
    python3 "$LOAD" load --url "http://127.0.0.1:$PORT" --key "$AUTH_KEY_HEX" --profile default --csr-dir csrs \
      --count 100000 --out "r$round-c$c.pem" --serials "r$round-c$c.serials" --stop-on-disconnect \
      > "r$round-c$c.out" 2> "r$round-c$c.err" &
    pids+=($!)
  done
  sleep "0.$((RANDOM % 8 + 2))"
  kill -KILL "$SERVE_PID"
  wait "$SERVE_PID" 2>/dev/null || true
  for c in 1 2; do
    wait "${pids[$((c - 1))]}" || fail "round $round client $c: $(cat "r$round-c$c.out" "r$round-c$c.err")"
  done
  cat r$round-c*.serials >> received.serials
  cat r$round-c*.pem >> received.pem
  # The ledger after the kill.
  [ "$(sqlite3 "$DB" 'PRAGMA integrity_check')" = ok ] || fail "round $round: integrity_check"
  "$HWCA" audit verify > audit.out 2>&1 || fail "round $round: audit verify: $(cat audit.out)"
  sqlite3 "$DB" "SELECT serial FROM certificates WHERE status = 'issued'" | sort > ledger.serials
  sort -u received.serials > got.serials
  [ "$(wc -l < got.serials)" = "$(wc -l < received.serials)" ] || fail "round $round: a serial was received twice"
  missing=$(comm -23 got.serials ledger.serials | head -3)
  [ -z "$missing" ] || fail "round $round: certificates received but not in the ledger: $missing"
  [ "$(sqlite3 "$DB" 'SELECT count(*) FROM certificates')" = "$(sqlite3 "$DB" 'SELECT count(DISTINCT serial) FROM certificates')" ] ||
    fail "round $round: a serial twice in the ledger"
  ok
done

received=$(wc -l < received.serials)
recorded=$(sqlite3 "$DB" 'SELECT count(*) FROM certificates')
[ "$received" -ge 20 ] || fail "only $received certificates were received over 20 rounds: the load did not run"
[ "$recorded" -ge "$received" ] || fail "fewer rows ($recorded) than certificates received ($received)"
verify_all ca.pem received.pem "$received"
# The certificate-issued entries of the audit chain match the rows one to one.
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit_events WHERE kind = 'certificate-issued'")" = "$recorded" ] ||
  fail "audit entries and certificate rows differ"
ok
# It still serves.
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" --workers 2
python3 "$LOAD" load --url "http://127.0.0.1:$PORT" --key "$AUTH_KEY_HEX" --profile default --csr-dir csrs \
  --count 10 --out after.pem --serials after.serials > after.out 2>&1 || fail "after the kills: $(cat after.out)"
serve_stop
echo "serve_crash.sh: $received certificates received, $((recorded - received)) recorded but in flight at a kill"
finish
