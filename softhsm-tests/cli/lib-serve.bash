# Helpers for the `hwca serve` tests (softhsm-tests/cli/serve_*.sh). Source after lib.bash and
# lib-cfssl.bash (for free_port).

LOAD="$HWCA_SOURCE_DIR/bench/serve_load.py"
AUTH_KEY_HEX=00112233445566778899aabbccddeeff
OTHER_KEY_HEX=ffeeddccbbaa99887766554433221100

# serve_ca: an RSA-2048 CA whose key is generated in SoftHSM2: $T/ca.pem, key URI in $CA_KEY.
serve_ca() {
  make_token serve-ca
  CA_KEY=$(key_uri serve-ca ca)
  echo '{"CN":"hwca serve test CA","key":{"algo":"rsa","size":2048}}' > "$T/ca-csr.json"
  (cd "$T" && "$HWCA" gencert -initca -ca-key "$CA_KEY" ca-csr.json --bare ca) || fail "gencert -initca failed"
}

# serve_start ARGS...: starts `hwca serve ARGS` in the background (log in $T/serve.err), waits until
# it listens. Sets SERVE_PID.
serve_start() {
  : > "$T/serve.err"
  start_bg "$HWCA" serve "$@" 2>> "$T/serve.err"
  SERVE_PID=$!
  local i
  for i in $(seq 1 150); do
    grep -q 'listening on' "$T/serve.err" && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || fail "hwca serve exited: $(cat "$T/serve.err")"
    sleep 0.1
  done
  fail "hwca serve did not start listening: $(cat "$T/serve.err")"
}

# serve_stop: SIGTERM; hwca serve must exit 0 within 30 seconds. One check.
serve_stop() {
  kill -TERM "$SERVE_PID"
  local i rc=0
  for i in $(seq 1 300); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$SERVE_PID" 2>/dev/null && fail "hwca serve still running 30 s after SIGTERM"
  wait "$SERVE_PID" || rc=$?
  [ "$rc" = 0 ] || fail "hwca serve exited $rc after SIGTERM: $(cat "$T/serve.err")"
  ok
}

# wait_log TEXT: waits (up to 10 s) for TEXT in the server's log.
wait_log() {
  local i
  for i in $(seq 1 100); do grep -qF -- "$1" "$T/serve.err" && return 0; sleep 0.1; done
  fail "'$1' never appeared in the server log: $(cat "$T/serve.err")"
}

# api PATH FILE [CURL ARGS...]: POSTs FILE to http://127.0.0.1:$PORT/api/v1/cfssl/PATH; the body goes
# to $T/resp.json, the status is printed.
api() {
  local path=$1 file=$2; shift 2
  curl -s -o "$T/resp.json" -w '%{http_code}' --max-time 10 -X POST --data-binary @"$file" "$@" \
    "http://127.0.0.1:$PORT/api/v1/cfssl/$path"
}

# refused STATUS CODE MESSAGE-SUBSTRING DESC: $T/resp.json is cfssl's failure envelope with that error,
# and the HTTP status ($got) is STATUS. One check.
refused() {
  local want=$1 code=$2 msg=$3 desc=$4
  [ "$got" = "$want" ] || fail "$desc: HTTP $got, want $want: $(cat "$T/resp.json")"
  jq -e --argjson code "$code" --arg msg "$msg" \
    '.success == false and .result == null and (.messages | type == "array") and (.errors | length == 1) and
     .errors[0].code == $code and (.errors[0].message | contains($msg))' "$T/resp.json" >/dev/null ||
    fail "$desc: unexpected envelope: $(cat "$T/resp.json")"
  ok
}

# authsign_body KEYHEX REQUEST-FILE: cfssl's authenticated request for REQUEST-FILE's exact bytes.
authsign_body() {
  local token request
  token=$(openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary "$2" | base64 -w0)
  request=$(base64 -w0 < "$2")
  printf '{"token":"%s","request":"%s"}' "$token" "$request"
}

# sign_request CSR-FILE PROFILE [HOSTS-JSON]: a sign request body (JSON, one line).
sign_request() {
  jq -nc --rawfile csr "$1" --arg p "$2" --argjson hosts "${3:-null}" \
    '{certificate_request: $csr, profile: $p} + (if $hosts == null then {} else {hosts: $hosts} end)'
}

# ledger_count: certificates in the ledger; ledger_events KIND: events of that kind.
ledger_count() { sqlite3 "$HWCA_HOME/ledger.db" 'SELECT count(*) FROM certificates'; }
ledger_events() { sqlite3 "$HWCA_HOME/ledger.db" "SELECT count(*) FROM events WHERE kind = '$1'"; }

# make_csrs DIR N: N ECDSA P-256 CSRs node1..N.example (with a DNS SAN each) in DIR.
make_csrs() {
  mkdir -p "$1"
  local i
  for i in $(seq 1 "$2"); do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
      -subj "/CN=node$i.example" -addext "subjectAltName=DNS:node$i.example" -out "$1/node$i.csr" 2>/dev/null ||
      fail "openssl req failed"
  done
}

# verify_all CA CERTS.pem N: CERTS.pem holds exactly N certificates and every one verifies against
# CA with openssl. One check.
verify_all() {
  local dir="$T/verify.$$"
  rm -rf "$dir"; mkdir -p "$dir"
  awk -v d="$dir" '/-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/%06d.pem", d, n) } f { print > f } /-----END CERTIFICATE-----/ { close(f); f = "" }' "$2"
  local n okc
  n=$(find "$dir" -name '*.pem' | wc -l)
  [ "$n" = "$3" ] || fail "$2 holds $n certificates, want $3"
  okc=$(find "$dir" -name '*.pem' -print0 | xargs -0 -n 1000 openssl verify -CAfile "$1" 2>&1 | grep -c ': OK$' || true)
  [ "$okc" = "$3" ] || fail "only $okc of $3 certificates verify against $1"
  rm -rf "$dir"
  ok
}
