#!/usr/bin/env bash
# hwca serve under load, CA key (RSA-2048) in SoftHSM2, 2 workers: 2 clients x 5,000 authsign requests
# on keep-alive connections: zero errors, 10,000 ledger rows, 10,000 distinct serials, every
# certificate verifies with openssl. Then SIGTERM in the middle of a second run: the server exits 0,
# every certificate a client received is in the ledger, and the ledger is whole (SQLite integrity
# check, audit chain).
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash" || exit 1
PER_CLIENT=${SERVE_LOAD_PER_CLIENT:-5000}

serve_ca
cat > ca-config.json <<EOF
{"signing":{"default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}},
 "auth_keys":{"key1":{"type":"standard","key":"$AUTH_KEY_HEX"}}}
EOF
make_csrs csrs 16
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" --workers 2
base=$(ledger_count)

load() {  # NAME [ARGS...]: one client in the background; sets LOAD_PIDS
  python3 "$LOAD" load --url "http://127.0.0.1:$PORT" --key "$AUTH_KEY_HEX" --profile kubernetes --csr-dir csrs \
    --count "$PER_CLIENT" --out "$1.pem" --serials "$1.serials" "${@:2}" > "$1.out" 2> "$1.err" &
  LOAD_PIDS+=($!)
}
LOAD_PIDS=()
load c1
load c2
for i in 0 1; do wait "${LOAD_PIDS[$i]}" || fail "client $((i + 1)) failed: $(cat c$((i + 1)).out c$((i + 1)).err)"; done
for c in c1 c2; do
  jq -e --argjson n "$PER_CLIENT" '.ok == $n and .errors == 0' $c.out >/dev/null || fail "$c: $(cat $c.out)"
done
ok
total=$((2 * PER_CLIENT))
[ "$(ledger_count)" = $((base + total)) ] || fail "ledger has $(ledger_count) rows, want $((base + total))"
[ "$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT count(DISTINCT serial) FROM certificates WHERE requester LIKE 'serve:authsign auth_key=key1 %'")" = "$total" ] ||
  fail "distinct serials in the ledger"
cat c1.serials c2.serials | sort -u > got.serials
[ "$(wc -l < got.serials)" = "$total" ] || fail "the clients received $(wc -l < got.serials) distinct serials, want $total"
sqlite3 "$HWCA_HOME/ledger.db" 'SELECT serial FROM certificates' | sort > ledger.serials
[ -z "$(comm -23 got.serials ledger.serials)" ] || fail "certificates received but not in the ledger"
ok
cat c1.pem c2.pem > all.pem
verify_all ca.pem all.pem "$total"
grep -q "^hwca_serve_requests_total{endpoint=\"authsign\",status=\"200\"} $total\$" <(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics") ||
  fail "metrics do not count $total authsign requests"
ok

# SIGTERM during load.
rm -f c1.* c2.*
LOAD_PIDS=()
load c1 --stop-on-disconnect
load c2 --stop-on-disconnect
for i in $(seq 1 100); do
  [ -s c1.serials ] && [ -s c2.serials ] && [ "$(cat c1.serials c2.serials | wc -l)" -ge 200 ] && break
  sleep 0.1
done
kill -TERM "$SERVE_PID"
for i in 0 1; do wait "${LOAD_PIDS[$i]}" || fail "client $((i + 1)) during SIGTERM: $(cat c$((i + 1)).out c$((i + 1)).err)"; done
rc=0
wait "$SERVE_PID" || rc=$?
[ "$rc" = 0 ] || fail "hwca serve exited $rc after SIGTERM: $(cat serve.err)"
grep -q 'drained; exiting' serve.err || fail "no drain in the log: $(cat serve.err)"
ok
cat c1.serials c2.serials | sort -u > got.serials
n=$(wc -l < got.serials)
[ "$n" -ge 200 ] && [ "$n" -lt "$total" ] || fail "$n certificates received around the SIGTERM"
jq -se 'all(.disconnected and .errors == 0)' c1.out c2.out >/dev/null || fail "clients: $(cat c1.out c2.out)"
sqlite3 "$HWCA_HOME/ledger.db" 'SELECT serial FROM certificates' | sort > ledger.serials
[ -z "$(comm -23 got.serials ledger.serials)" ] || fail "certificates received but not in the ledger: $(comm -23 got.serials ledger.serials | head -3)"
[ "$(sqlite3 "$HWCA_HOME/ledger.db" 'PRAGMA integrity_check')" = ok ] || fail "ledger integrity"
"$HWCA" audit verify > audit.out 2>&1 || fail "audit chain: $(cat audit.out)"
[ "$(ledger_events serve-stopped)" = 1 ] || fail "serve-stopped not recorded"
ok
finish
