#!/usr/bin/env bash
# Scale-out on PostgreSQL: a private PostgreSQL 15 cluster (Debian's `postgresql` package) in a temporary
# folder on a loopback port, started and stopped by this test; two `hwca serve` processes (same SoftHSM2
# token and CA key, different ports) share it with `--ledger postgresql://...`; 2 clients x 2,500
# authsign requests against EACH server at once. Then: exactly 10,000 certificate rows, 10,000 distinct
# serials, every certificate a client received is in the ledger and verifies, and `hwca audit verify`
# finds one intact chain. Also: an unreachable server is one error line and the password never shows;
# PostgreSQL stopped under a running server fails the request (nothing handed out) and a restart heals.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash" || exit 1
PER_CLIENT=${SERVE_PG_PER_CLIENT:-2500}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || fail "PostgreSQL 15 is not installed ($PGBIN/initdb; scripts/install.sh installs postgresql)"

# The cluster lives in its own temporary folder: PostgreSQL refuses to run as root, so as root it runs as
# the package's `postgres` user, which must own the folder (and cannot enter $T, which stays 0700).
PGT=$(mktemp -d "${TMPDIR:-/tmp}/hwca-pg.XXXXXX")
PG_PID=""
as_pg() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres ||
    fail "no user to run PostgreSQL as"
  chown postgres: "$PGT"
  as_pg() { (cd "$PGT" && runuser -u postgres -- "$@"); }
fi
_pg_cleanup() {
  local rc=$?
  if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
    as_pg "$PGBIN/pg_ctl" -D "$PGT/data" stop -m fast -w -t 20 >/dev/null 2>&1 || true
    kill -0 "$PG_PID" 2>/dev/null && kill -KILL "$PG_PID" 2>/dev/null
  fi
  rm -rf "$PGT"
  (exit "$rc")
  _cleanup
}
trap _pg_cleanup EXIT

free_port PGPORT
as_pg "$PGBIN/initdb" -D "$PGT/data" -U hwca --auth=trust -E UTF8 --no-sync > "$PGT/initdb.log" 2>&1 ||
  fail "initdb: $(cat "$PGT/initdb.log")"
as_pg "$PGBIN/pg_ctl" -D "$PGT/data" -o "-k $PGT -h 127.0.0.1 -p $PGPORT -c max_connections=50" -l "$PGT/pg.log" \
  -w -t 60 start > /dev/null || fail "PostgreSQL did not start: $(cat "$PGT/pg.log")"
PG_PID=$(head -1 "$PGT/data/postmaster.pid")
psql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U hwca -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c 'CREATE DATABASE hwca' || fail "CREATE DATABASE failed"
URL="postgresql://hwca@127.0.0.1:$PGPORT/hwca"
q() { psql -d hwca -c "$1"; }

# A fresh database: the schema is made on first open, at the SQLite ledger's version.
"$HWCA" --ledger "$URL" ledger list > list0.out 2> list0.err || fail "ledger list on a fresh database: $(cat list0.err)"
[ ! -s list0.out ] || fail "a fresh ledger lists certificates: $(cat list0.out)"
[ "$(q 'SELECT version FROM schema_version')" = 3 ] || fail "schema version $(q 'SELECT version FROM schema_version')"
ok

# Unreachable server: one error line, exit 1, the password never printed.
free_port DEADPORT
expect_error "unreachable PostgreSQL" "$HWCA" --ledger "postgresql://hwca:s3cretpw@127.0.0.1:$DEADPORT/hwca" ledger list
grep -q 's3cretpw' "$T/.stderr" && fail "the password appears in the error: $(cat "$T/.stderr")"
grep -q "postgresql://hwca@127.0.0.1:$DEADPORT/hwca" "$T/.stderr" || fail "the error does not name the ledger: $(cat "$T/.stderr")"
ok

serve_ca
cat > ca-config.json <<EOF2
{"signing":{"default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}},
 "auth_keys":{"key1":{"type":"standard","key":"$AUTH_KEY_HEX"}}}
EOF2
make_csrs csrs 16
# Automatic audit checkpoints every 50 entries, signed by an audit key in the same token: with two
# servers appending, the ledger's chain lock makes one checkpoint per due point, not one per server.
AUDIT_KEY=$(key_uri serve-ca ca-audit)
"$HWCA" key generate --key "$AUDIT_KEY" --algo ecdsa-p256 >/dev/null
export HWCA_AUDIT_EVERY=50 HWCA_AUDIT_KEY="$AUDIT_KEY"

# Two servers on one ledger, each with its own log.
start_server() {  # NAME PORT: sets PID_<NAME>
  : > "serve-$1.err"
  start_bg "$HWCA" --ledger "$URL" serve -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$2" --workers 2 \
    2>> "serve-$1.err"
  printf -v "PID_$1" '%s' "$!"
  local i
  for i in $(seq 1 150); do
    grep -q 'listening on' "serve-$1.err" && return 0
    kill -0 "$!" 2>/dev/null || fail "hwca serve $1 exited: $(cat "serve-$1.err")"
    sleep 0.1
  done
  fail "hwca serve $1 did not start listening: $(cat "serve-$1.err")"
}
free_port PORT_A
free_port PORT_B
start_server A "$PORT_A"
start_server B "$PORT_B"
grep -q "ledger postgresql://hwca@127.0.0.1:$PGPORT/hwca" serve-A.err || fail "server A does not name its ledger: $(cat serve-A.err)"
[ "$(q "SELECT count(*) FROM events WHERE kind = 'serve-started'")" = 2 ] || fail "serve-started not recorded twice"
ok

load() {  # NAME PORT: one client in the background; appends to LOAD_PIDS
  python3 "$LOAD" load --url "http://127.0.0.1:$2" --key "$AUTH_KEY_HEX" --profile kubernetes --csr-dir csrs \
    --count "$PER_CLIENT" --out "$1.pem" --serials "$1.serials" > "$1.out" 2> "$1.err" &
  LOAD_PIDS+=($!)
}
LOAD_PIDS=()
load a1 "$PORT_A"
load a2 "$PORT_A"
load b1 "$PORT_B"
load b2 "$PORT_B"
names=(a1 a2 b1 b2)
for i in 0 1 2 3; do
  wait "${LOAD_PIDS[$i]}" || fail "client ${names[$i]} failed: $(cat "${names[$i]}.out" "${names[$i]}.err")"
done
for c in "${names[@]}"; do
  jq -e --argjson n "$PER_CLIENT" '.ok == $n and .errors == 0' "$c.out" >/dev/null || fail "$c: $(cat "$c.out")"
done
ok

total=$((4 * PER_CLIENT))
[ "$(q 'SELECT count(*) FROM certificates')" = "$total" ] || fail "the ledger has $(q 'SELECT count(*) FROM certificates') rows, want $total"
[ "$(q "SELECT count(DISTINCT serial) FROM certificates WHERE requester LIKE 'serve:authsign auth_key=key1 %'")" = "$total" ] ||
  fail "distinct serials in the ledger"
ok
cat a1.serials a2.serials b1.serials b2.serials | sort -u > got.serials
[ "$(wc -l < got.serials)" = "$total" ] || fail "the clients received $(wc -l < got.serials) distinct serials, want $total"
q 'SELECT serial FROM certificates' | sort > ledger.serials
[ -z "$(comm -23 got.serials ledger.serials)" ] || fail "certificates received but not in the ledger"
ok
# Both servers really signed (neither was idle while the other did all the work).
for p in "$PORT_A" "$PORT_B"; do
  grep -q "^hwca_serve_requests_total{endpoint=\"authsign\",status=\"200\"} $((2 * PER_CLIENT))\$" \
    <(curl -s --max-time 5 "http://127.0.0.1:$p/metrics") || fail "server on port $p did not sign $((2 * PER_CLIENT))"
done
ok
cat a1.pem a2.pem b1.pem b2.pem > all.pem
verify_all ca.pem all.pem "$total"

# Checkpoints: each at its own entry, at least 50 entries apart, and some were made.
unset HWCA_AUDIT_EVERY HWCA_AUDIT_KEY
q 'SELECT entry_id FROM audit_checkpoints ORDER BY entry_id' > cps.txt
[ "$(wc -l < cps.txt)" -ge 2 ] || fail "too few automatic checkpoints: $(wc -l < cps.txt)"
[ -z "$(uniq -d cps.txt)" ] || fail "two checkpoints at the same entry: $(uniq -d cps.txt | head -3)"
awk 'NR > 1 && $1 - prev < 50 {bad = 1; print prev, $1} {prev = $1} END {exit bad}' cps.txt > close.txt ||
  fail "checkpoints closer than 50 entries (one per server, not one per due point): $(head -3 close.txt)"
ok

# One chain, no gaps, as many certificate-issued entries as certificates.
[ "$(q "SELECT count(*) FROM audit_events WHERE kind = 'certificate-issued'")" = "$total" ] || fail "certificate-issued audit entries"
[ "$(q 'SELECT count(*) = max(id) AND min(id) = 1 FROM audit_events')" = t ] || fail "audit ids are not 1..N"
[ "$(q 'SELECT count(*) FROM audit_events a JOIN audit_events b ON b.id = a.id + 1 WHERE b.prev_hash <> a.hash')" = 0 ] ||
  fail "the audit chain forks"
ok

# PostgreSQL goes away under a running server: the request fails with cfssl's failure envelope and no
# certificate; once PostgreSQL is back, the server reconnects and signs again (recorded).
sign_request csrs/node1.csr kubernetes > one.json
authsign_body "$AUTH_KEY_HEX" one.json > one.body
as_pg "$PGBIN/pg_ctl" -D "$PGT/data" stop -m fast -w -t 30 > /dev/null || fail "pg_ctl stop"
PORT=$PORT_A
got=$(api authsign one.body)
[ "$got" = 500 ] || fail "with PostgreSQL down: HTTP $got: $(cat resp.json)"
jq -e '.success == false and .result == null' resp.json >/dev/null || fail "with PostgreSQL down: $(cat resp.json)"
grep -q 'BEGIN CERTIFICATE' resp.json && fail "a certificate was handed out with PostgreSQL down"
ok
as_pg "$PGBIN/pg_ctl" -D "$PGT/data" -o "-k $PGT -h 127.0.0.1 -p $PGPORT -c max_connections=50" -l "$PGT/pg.log" \
  -w -t 60 start > /dev/null || fail "PostgreSQL did not restart: $(cat "$PGT/pg.log")"
PG_PID=$(head -1 "$PGT/data/postmaster.pid")
got=$(api authsign one.body)
[ "$got" = 200 ] || fail "after PostgreSQL came back: HTTP $got: $(cat resp.json)"
serial=$(jq -r '.result.certificate' resp.json | openssl x509 -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')
[ "$(q "SELECT count(*) FROM certificates WHERE ltrim(serial, '0') = '$serial'")" = 1 ] ||
  fail "the certificate signed after the restart ($serial) is not in the ledger"
total=$((total + 1))
ok

# Both servers stop cleanly and record it; then the chain verifies through hwca itself.
for n in A B; do
  pid_var="PID_$n"
  kill -TERM "${!pid_var}"
  rc=0
  wait "${!pid_var}" || rc=$?
  [ "$rc" = 0 ] || fail "hwca serve $n exited $rc after SIGTERM: $(cat "serve-$n.err")"
done
[ "$(q "SELECT count(*) FROM events WHERE kind = 'serve-stopped'")" = 2 ] || fail "serve-stopped not recorded twice"
ok
"$HWCA" --ledger "$URL" audit verify > audit.out 2>&1 || fail "audit verify: $(cat audit.out)"
grep -q 'intact' audit.out || fail "audit verify: $(cat audit.out)"
ok
[ "$("$HWCA" --ledger "$URL" ledger list | wc -l)" = "$total" ] || fail "hwca ledger list does not show $total certificates"
ok

# Revocation and a CRL work on the shared ledger too (the CRL number comes from PostgreSQL).
rserial=$(head -1 got.serials)
"$HWCA" --ledger "$URL" revoke --serial "$rserial" --reason keyCompromise > revoke.out 2>&1 || fail "revoke: $(cat revoke.out)"
[ "$(q "SELECT status || ' ' || revocation_reason FROM certificates WHERE serial = '$rserial'")" = "revoked keyCompromise" ] ||
  fail "the revocation is not in the ledger"
"$HWCA" --ledger "$URL" crl --ca ca.pem --ca-key "$CA_KEY" --no-checkpoint --out ca.crl > crl.out 2>&1 || fail "crl: $(cat crl.out)"
openssl crl -in ca.crl -noout -text > crl.txt || fail "openssl cannot read the CRL"
grep -qi "Serial Number: 0*$rserial" crl.txt || fail "the CRL does not list $rserial: $(cat crl.txt)"
[ "$(q 'SELECT last_number FROM crl_numbers')" = 1 ] || fail "CRL number"
"$HWCA" --ledger "$URL" audit verify > audit.out 2>&1 || fail "audit verify after the revocation: $(cat audit.out)"
ok

# k8s init on the shared ledger: its crash-recovery look-up (the k8s-file rows, by request-id prefix)
# runs in PostgreSQL. A primary file deleted after the run looks like one that never arrived: its row
# is marked orphaned by the next run and the certificate issued again.
sed 's/token=hwca-example;/token=serve-ca;/' "$HWCA_SOURCE_DIR/examples/loopback-cluster.yaml" > k8s.yaml
export HWCA_PIN; HWCA_PIN=$(cat "$T/serve-ca.pin")
"$HWCA" --ledger "$URL" k8s init --config k8s.yaml --out k8s --only apiserver > k8s1.out 2>&1 || fail "k8s init: $(cat k8s1.out)"
grep -q '^init: 2 certificates issued, 0 kept' k8s1.out || fail "k8s init: $(cat k8s1.out)"
"$HWCA" --ledger "$URL" k8s init --config k8s.yaml --out k8s --only apiserver > k8s2.out 2>&1 || fail "k8s init again: $(cat k8s2.out)"
grep -q '^init: 0 certificates issued, 2 kept' k8s2.out || fail "k8s init again: $(cat k8s2.out)"
rm k8s/pki/apiserver.crt
"$HWCA" --ledger "$URL" k8s init --config k8s.yaml --out k8s --only apiserver > k8s3.out 2>&1 || fail "k8s init after rm: $(cat k8s3.out)"
grep -q '^init: 1 ledger row marked orphaned' k8s3.out || fail "no orphan found: $(cat k8s3.out)"
[ "$(q "SELECT count(*) FROM certificates WHERE request_id LIKE 'k8s-file:1:%/pki/apiserver.crt' AND status = 'orphaned'")" = 1 ] ||
  fail "the orphaned row is not marked in PostgreSQL"
[ "$(q "SELECT count(*) FROM certificates WHERE request_id LIKE 'k8s-file:%'")" = 3 ] || fail "k8s-file rows"
openssl verify -CAfile k8s/pki/ca.crt k8s/pki/apiserver.crt > /dev/null || fail "the re-issued apiserver certificate"
ok

# Tampering is seen: change one entry's detail and `audit verify` reports the break.
q "UPDATE audit_events SET detail = replace(detail, 'serial', 'Serial') WHERE id = 5"
rc=0
"$HWCA" --ledger "$URL" audit verify > audit2.out 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q 'BROKEN at entry 5' audit2.out || fail "tampering not found (exit $rc): $(cat audit2.out)"
ok
finish
