#!/usr/bin/env bash
# Hostile requests against hwca serve: each is refused with the right HTTP status and cfssl's
# envelope, each refusal is recorded in the ledger, and nothing is issued. Then 1,000 idle
# connections: /healthz and an authsign from another client are still answered (client timeout 2 s),
# and the server closes the idle ones after its header timeout. Then a connection bound: connections
# over it are closed at once.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash" || exit 1

serve_ca
# The default profile requires authentication (the recommended setup: an unknown profile name then
# falls back to a profile that needs a token). "open" needs none but only allows a.example.
cat > ca-config.json <<EOF
{"signing":{
  "default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"},
  "profiles":{
    "kubernetes":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"},
    "open":{"expiry":"1h","usages":["signing","client auth"],"name_whitelist":"^a\\\\.example\$"}}},
 "auth_keys":{"key1":{"type":"standard","key":"$AUTH_KEY_HEX"}}}
EOF
jq -e '.signing.profiles.open.name_whitelist == "^a\\.example$"' ca-config.json >/dev/null || fail "config: $(cat ca-config.json)"
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" --workers 2 --header-timeout 3
base=$(ledger_count)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout a-key.pem -subj /CN=a.example -out a.csr 2>/dev/null
refusals=0
expect_refused() {  # STATUS CODE MESSAGE DESC: after `got=$(api ...)`
  refused "$@"
  refusals=$((refusals + 1))
  [ "$(ledger_count)" = "$base" ] || fail "$4: a certificate was issued"
  [ "$(ledger_events serve-refused)" = "$refusals" ] || fail "$4: the refusal is not in the ledger"
}

# The control: a good request on "open" issues (then base moves on).
sign_request a.csr open > good.json
got=$(api sign good.json)
[ "$got" = 200 ] || fail "control request: $got $(cat resp.json)"
base=$((base + 1))
ok

printf '{"certificate_request": "-----BEGIN' > malformed.json
got=$(api sign malformed.json); expect_refused 400 400 "Unable to parse sign request" "malformed JSON"
echo '[1,2,3]' > array.json
got=$(api sign array.json); expect_refused 400 400 "Unable to parse sign request" "JSON that is not an object"
echo '{"certificate_request": 42, "profile": "open"}' > wrongtype.json
got=$(api sign wrongtype.json); expect_refused 400 400 "Unable to parse sign request" "a number for the CSR"
echo '{"profile": "open"}' > nocsr.json
got=$(api sign nocsr.json); expect_refused 400 400 "missing parameter 'certificate_request'" "no CSR"
printf -- '-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n' > junk.csr
sign_request junk.csr open > junk.json
got=$(api sign junk.json); expect_refused 400 9002 "CSR Decode failed" "a CSR that does not parse"

# A CSR whose signature does not verify: one bit of the signature flipped.
openssl req -in a.csr -outform DER -out a.der
python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[-3] ^= 1; open(sys.argv[2], "wb").write(d)' a.der bad.der
openssl req -inform DER -in bad.der -out badsig.csr 2>/dev/null || fail "re-encoding the tampered CSR"
openssl req -in badsig.csr -noout -verify 2>&1 | grep -q "verify OK" && fail "the tampered CSR still verifies"
sign_request badsig.csr open > badsig.json
got=$(api sign badsig.json); expect_refused 400 9300 "signature" "a CSR whose signature does not verify"

# A body over the 1 MiB cap (announced by Content-Length, and sent anyway).
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' 'a' > big.json
got=$(api sign big.json -H 'Expect:'); expect_refused 413 413 "over the limit of 1048576 bytes" "a body over the cap"
# Chunked, with no Content-Length: the cap holds while reading.
got=$(api sign big.json -H 'Transfer-Encoding: chunked' -H 'Expect:'); expect_refused 413 413 "over the limit" "a chunked body over the cap"

# authsign: a token computed over other bytes, and a valid token replayed with a different body.
sign_request a.csr kubernetes > req.json
sign_request a.csr kubernetes '["a.example","evil.example"]' > other.json
token=$(openssl dgst -sha256 -mac HMAC -macopt "hexkey:$AUTH_KEY_HEX" -binary other.json | base64 -w0)
printf '{"token":"%s","request":"%s"}' "$token" "$(base64 -w0 < req.json)" > otherbytes.json
got=$(api authsign otherbytes.json); expect_refused 400 400 "invalid token" "a token over other bytes"
authsign_body "$AUTH_KEY_HEX" req.json > valid.json
printf '{"token":%s,"request":"%s"}' "$(jq .token valid.json)" "$(base64 -w0 < other.json)" > replay.json
got=$(api authsign replay.json); expect_refused 400 400 "invalid token" "a replayed token for a different body"
authsign_body "$OTHER_KEY_HEX" req.json > wrongkey.json
got=$(api authsign wrongkey.json); expect_refused 400 400 "invalid token" "a token made with another key"
echo '{"token":"!!!","request":"%%%"}' > notb64.json
got=$(api authsign notb64.json); expect_refused 400 400 "Unable to parse authenticated request" "authsign that is not base64"
sign_request a.csr open > openreq.json
authsign_body "$AUTH_KEY_HEX" openreq.json > noprovider.json
got=$(api authsign noprovider.json); expect_refused 400 400 "no authentication provider" "authsign on a profile without a key"

# An unknown profile falls back to the default profile, as in cfssl; here the default needs a token.
sign_request a.csr no-such-profile > unknown.json
got=$(api sign unknown.json); expect_refused 400 400 "authentication required" "an unknown profile on /sign"
# A profile whose name_whitelist rejects the hosts, and one that rejects the CSR's CN.
sign_request a.csr open '["a.example","evil.example"]' > evilhost.json
got=$(api sign evilhost.json); expect_refused 400 5500 "evil.example" "name_whitelist rejects a host"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=b.example -out b.csr 2>/dev/null
sign_request b.csr open > evilcn.json
got=$(api sign evilcn.json); expect_refused 400 5500 "b.example" "name_whitelist rejects the CN"
# A requested serial number: hwca draws every serial itself.
jq '.serial = 1234' good.json > serial.json
got=$(api sign serial.json); expect_refused 400 5300 "serial" "a requested serial"

# Wrong methods and paths.
got=$(curl -s -o resp.json -w '%{http_code}' --max-time 10 "http://127.0.0.1:$PORT/api/v1/cfssl/sign")
expect_refused 405 405 'Method is not allowed:"GET"' "GET on sign"
got=$(curl -s -o resp.json -w '%{http_code}' --max-time 10 -X PUT --data-binary @good.json "http://127.0.0.1:$PORT/api/v1/cfssl/authsign")
expect_refused 405 405 'Method is not allowed:"PUT"' "PUT on authsign"
got=$(api bundle good.json); expect_refused 404 404 "no such endpoint" "an endpoint hwca does not serve"
got=$(curl -s -o resp.json -w '%{http_code}' --max-time 10 -X POST --data-binary @good.json "http://127.0.0.1:$PORT/healthz")
expect_refused 405 405 "Method is not allowed" "POST on healthz"
# Not HTTP at all.
got=$(python3 - "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
open("resp.json", "wb").write(body)
print(head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1 ") else "none")
EOF
)
expect_refused 400 400 "malformed HTTP request" "bytes that are not HTTP"
grep -q "^hwca_serve_refusals_total" <(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics") || fail "no refusals in /metrics"
ok

# 1,000 idle connections; /healthz and an authsign from another client within 2 s each; the server
# then closes the idle ones (header timeout 3 s).
python3 "$LOAD" idle --url "http://127.0.0.1:$PORT" --count 1000 --key "$AUTH_KEY_HEX" --profile kubernetes --csr a.csr \
  --after-hold 15 > idle.json || fail "idle client failed"
jq -e '.idle == 1000 and .healthz.ok and .authsign.ok' idle.json >/dev/null || fail "under 1,000 idle connections: $(cat idle.json)"
jq -e '.closed_by_server == 1000' idle.json >/dev/null || fail "idle connections were not closed by the server: $(cat idle.json)"
[ "$(ledger_count)" = $((base + 1)) ] || fail "the authsign under load was not recorded"
ok
serve_stop

# A connection bound: with --max-connections 50, 60 idle connections leave 10 closed at once
# (and the probe's and authsign's connections too, while the 50 are held).
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" --workers 2 --header-timeout 2 --max-connections 50
python3 "$LOAD" idle --url "http://127.0.0.1:$PORT" --count 60 --key "$AUTH_KEY_HEX" --profile kubernetes --csr a.csr \
  --after-hold 10 > bound.json || fail "bound client failed"
jq -e '.closed_by_server == 60 and (.healthz.ok | not)' bound.json >/dev/null || fail "bound: $(cat bound.json)"
refused_conns=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" | sed -n 's/^hwca_serve_connections_refused_total //p')
[ "$refused_conns" -ge 10 ] || fail "connections refused over the bound: '$refused_conns'"
[ "$(curl -s --max-time 5 "http://127.0.0.1:$PORT/healthz")" = ok ] || fail "healthz after the idle connections went"
ok
serve_stop
finish
