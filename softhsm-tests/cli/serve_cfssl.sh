#!/usr/bin/env bash
# hwca serve with the real Debian cfssl 1.2.0 client: `cfssl gencert` and `cfssl sign` with an
# auth_remote client config get certificates that verify against the token CA; a wrong key gets
# "invalid token" and nothing; an unauthenticated /sign on an authenticated profile issues nothing.
# Also: info, newcert, /metrics, the ledger's record of who asked, SIGHUP reload (good and broken
# file), SIGTERM exit 0, TLS (cfssl client) and mutual TLS with a CN allow-list (curl).
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-serve.bash" || exit 1

serve_ca
cat > ca-config.json <<EOF
{"signing":{
  "default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]},
  "profiles":{
    "kubernetes":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}}},
 "auth_keys":{"key1":{"type":"standard","key":"$AUTH_KEY_HEX"}}}
EOF
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -address 127.0.0.1 -port "$PORT" --workers 2
grep -q "listening on http://127.0.0.1:$PORT" serve.err || fail "listening line: $(cat serve.err)"
[ "$(curl -s --max-time 5 "http://127.0.0.1:$PORT/healthz")" = ok ] || fail "healthz"
ok
base=$(ledger_count)   # the CA itself

# The client side, as teams write it for cfssl serve. (Debian's cfssl, built with Go 1.19, cannot
# parse a bare "127.0.0.1:PORT" remote - Go's URL parser rejects it - so the remote carries http://.)
client_json() {  # KEYHEX REMOTE
  cat <<EOF
{"signing":{
  "default":{"auth_remote":{"remote":"hwca","auth_key":"key1"}},
  "profiles":{"kubernetes":{"auth_remote":{"remote":"hwca","auth_key":"key1"}}}},
 "auth_keys":{"key1":{"type":"standard","key":"$1"}},
 "remotes":{"hwca":"$2"}}
EOF
}
client_json "$AUTH_KEY_HEX" "http://127.0.0.1:$PORT" > client.json
client_json "$OTHER_KEY_HEX" "http://127.0.0.1:$PORT" > wrong-key.json

cat > kube-csr.json <<'EOF'
{"CN":"kubernetes","hosts":["127.0.0.1","10.254.0.1","kubernetes.default"],"key":{"algo":"rsa","size":2048},
 "names":[{"C":"CN","ST":"FuZhou","L":"FuZhou","O":"k8s","OU":"System"}]}
EOF
cfssl gencert -config client.json -profile kubernetes kube-csr.json > gencert.json 2> gencert.err ||
  fail "cfssl gencert through hwca serve failed: $(cat gencert.err)"
cfssljson_bare kube < gencert.json
verify_chain ca.pem kube.pem
same_pubkey kube.pem kube-key.pem
[ "$(openssl x509 -in kube.pem -noout -subject -nameopt RFC2253)" = "subject=CN=kubernetes,OU=System,O=k8s,L=FuZhou,ST=FuZhou,C=CN" ] ||
  fail "gencert subject: $(openssl x509 -in kube.pem -noout -subject -nameopt RFC2253)"
[ "$(ext_value kube.pem subjectAltName)" = "DNS:kubernetes.default, IP Address:127.0.0.1, IP Address:10.254.0.1" ] ||
  fail "gencert SANs: $(ext_value kube.pem subjectAltName)"
leaf_validity_ok kube.pem ca.pem $((43800 * 3600))
ok

openssl req -new -newkey rsa:2048 -nodes -keyout x-key.pem -subj "/O=system:nodes/CN=system:node:worker-1" \
  -addext "subjectAltName=DNS:worker-1,IP:10.0.0.11" -out x.csr 2>/dev/null
cfssl sign -config client.json -profile kubernetes x.csr > sign.json 2> sign.err ||
  fail "cfssl sign through hwca serve failed: $(cat sign.err)"
cfssljson_bare x < sign.json
verify_chain ca.pem x.pem
same_pubkey x.pem x-key.pem
[ "$(ext_value x.pem subjectAltName)" = "DNS:worker-1, IP Address:10.0.0.11" ] || fail "sign SANs: $(ext_value x.pem subjectAltName)"
[ "$(ext_value x.pem extendedKeyUsage)" = "TLS Web Server Authentication, TLS Web Client Authentication" ] || fail "sign EKU"
ok
[ "$(ledger_count)" = $((base + 2)) ] || fail "ledger: $(ledger_count) certificates, want $((base + 2))"
for c in kube x; do
  serial=$(openssl x509 -in $c.pem -noout -serial | cut -d= -f2 | tr A-F a-f)
  who=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT requester || '|' || profile FROM certificates WHERE serial = '$serial'")
  [[ "$who" == "serve:authsign auth_key=key1 remote=127.0.0.1:"*"|kubernetes" ]] || fail "$c ledger requester: '$who'"
done
ok

# A wrong key: "invalid token", no certificate, a refusal in the ledger.
out=$(cfssl sign -config wrong-key.json -profile kubernetes x.csr 2>&1) && fail "cfssl sign with a wrong key succeeded"
[[ "$out" == *"invalid token"* ]] || fail "wrong key: $out"
[ "$(ledger_count)" = $((base + 2)) ] || fail "a wrong key issued a certificate"
sqlite3 "$HWCA_HOME/ledger.db" "SELECT detail FROM events WHERE kind = 'serve-refused'" | grep -q '"message":"invalid token"' ||
  fail "the invalid token is not in the ledger"
ok

# The bare host:port remote: the Debian client refuses it before connecting (documented in docs/serve.md).
client_json "$AUTH_KEY_HEX" "127.0.0.1:$PORT" > bare.json
out=$(cfssl sign -config bare.json -profile kubernetes x.csr 2>&1) && fail "bare remote unexpectedly worked"
[[ "$out" == *"failed to connect to remote"* ]] || fail "bare remote: $out"
ok

# An unauthenticated /sign on the authenticated profile issues nothing.
sign_request x.csr kubernetes > plain.json
got=$(api sign plain.json)
refused 400 400 "authentication required" "unauthenticated sign on kubernetes"
[ "$(ledger_count)" = $((base + 2)) ] || fail "an unauthenticated /sign issued a certificate"
ok

# cfssl sign with a plain `remote` profile: /sign on the unauthenticated default profile.
cat > plain-client.json <<EOF
{"signing":{"default":{"remote":"hwca"}},"remotes":{"hwca":"http://127.0.0.1:$PORT"}}
EOF
cfssl sign -config plain-client.json x.csr > plain-sign.json 2> plain-sign.err || fail "plain cfssl sign: $(cat plain-sign.err)"
jq -r .cert plain-sign.json > plain.pem
verify_chain ca.pem plain.pem
[ "$(validity_seconds plain.pem)" = $((8760 * 3600)) ] || fail "default profile validity $(validity_seconds plain.pem)"
who=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT requester FROM certificates ORDER BY rowid DESC LIMIT 1")
[[ "$who" == "serve:sign remote=127.0.0.1:"* ]] || fail "plain sign requester: $who"
ok

# info (cfssl info -remote) and newcert.
cfssl info -remote "http://127.0.0.1:$PORT" -profile kubernetes > info.json 2> info.err || fail "cfssl info: $(cat info.err)"
[ "$(jq -r .certificate info.json | openssl x509 -noout -fingerprint -sha256)" = "$(openssl x509 -in ca.pem -noout -fingerprint -sha256)" ] ||
  fail "info certificate is not the CA: $(cat info.json)"
[ "$(jq -c '[.usages, .expiry]' info.json)" = '[["signing","key encipherment","server auth","client auth"],"43800h"]' ] ||
  fail "info: $(cat info.json)"
ok
echo '{"request":{"CN":"svc.example","hosts":["svc.example"],"key":{"algo":"ecdsa","size":256}}}' > newcert.json
got=$(api newcert newcert.json)
[ "$got" = 200 ] || fail "newcert: HTTP $got $(cat resp.json)"
jq -r .result.certificate resp.json > nc.pem
jq -r .result.private_key resp.json > nc-key.pem
verify_chain ca.pem nc.pem
same_pubkey nc.pem nc-key.pem
[ "$(jq -r .result.sums.certificate.md5 resp.json)" = "$(openssl x509 -in nc.pem -outform DER | md5sum | cut -d' ' -f1 | tr a-f A-F)" ] ||
  fail "newcert sums: $(jq -c .result.sums resp.json)"
ok
# newcert has no authenticated form: an authenticated profile refuses it (cfssl 1.2.0 signs it).
echo '{"request":{"CN":"svc.example","hosts":["svc.example"]},"profile":"kubernetes"}' > newcert-auth.json
n=$(ledger_count)
got=$(api newcert newcert-auth.json)
refused 400 400 "authentication required" "newcert on kubernetes"
[ "$(ledger_count)" = "$n" ] || fail "newcert on an authenticated profile issued a certificate"

# /metrics.
curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" > metrics.txt
grep -qx 'hwca_serve_requests_total{endpoint="authsign",status="200"} 2' metrics.txt || fail "metrics authsign: $(grep requests_total metrics.txt)"
grep -qx 'hwca_serve_auth_token_errors_total 1' metrics.txt || fail "metrics token errors"
grep -qx 'hwca_serve_refusals_total{endpoint="sign",reason="auth_required"} 1' metrics.txt || fail "metrics refusals"
grep -q '^hwca_serve_signing_seconds_count [1-9]' metrics.txt || fail "metrics latency histogram"
grep -q '^hwca_serve_signing_seconds_bucket{le="+Inf"} [1-9]' metrics.txt || fail "metrics +Inf bucket"
ok

# SIGHUP: a new profile appears; a broken file keeps the previous configuration.
jq '.signing.profiles.short = {"expiry":"2h","usages":["signing","client auth"]}' ca-config.json > new.json
mv new.json ca-config.json
kill -HUP "$SERVE_PID"
wait_log "SIGHUP: reloaded ca-config.json"
echo '{"profile":"short"}' > info-short.json
got=$(api info info-short.json)
[ "$got" = 200 ] && [ "$(jq -r .result.expiry resp.json)" = 2h ] || fail "after reload: $(cat resp.json)"
ok
echo '{"signing":{"default":{"expiry":"forever"' > ca-config.json
kill -HUP "$SERVE_PID"
wait_log "SIGHUP: keeping the previous configuration"
got=$(api info info-short.json)
[ "$got" = 200 ] && [ "$(jq -r .result.expiry resp.json)" = 2h ] || fail "after a broken reload: $(cat resp.json)"
cfssl sign -config client.json -profile kubernetes x.csr > /dev/null 2>&1 || fail "signing after a broken reload"
[ "$(ledger_events serve-config-reloaded)" = 1 ] && [ "$(ledger_events serve-config-reload-failed)" = 1 ] ||
  fail "reloads are not in the ledger"
ok

serve_stop
[ "$(ledger_events serve-stopped)" = 1 ] || fail "serve-stopped not recorded"
ok

# TLS: the cfssl client over https (trusting the CA through SSL_CERT_FILE, as Go does).
echo '{"signing":{"default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]},
  "profiles":{"kubernetes":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}}},
  "auth_keys":{"key1":{"type":"standard","key":"'"$AUTH_KEY_HEX"'"}}}' > ca-config.json
echo '{"CN":"127.0.0.1","hosts":["127.0.0.1","localhost"],"key":{"algo":"ecdsa","size":256}}' > tls-csr.json
"$HWCA" gencert -ca ca.pem -ca-key "$CA_KEY" tls-csr.json --bare tls >/dev/null 2>&1 || fail "server TLS certificate"
for cn in client-ok client-bad; do
  echo "{\"CN\":\"$cn\",\"key\":{\"algo\":\"ecdsa\",\"size\":256}}" > $cn.json
  "$HWCA" gencert -ca ca.pem -ca-key "$CA_KEY" $cn.json --bare $cn >/dev/null 2>&1 || fail "client certificate $cn"
done
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" -tls-cert tls.pem -tls-key tls-key.pem --workers 2
client_json "$AUTH_KEY_HEX" "https://127.0.0.1:$PORT" > tls-client.json
SSL_CERT_FILE=$T/ca.pem cfssl sign -config tls-client.json -profile kubernetes x.csr > tls-sign.json 2> tls-sign.err ||
  fail "cfssl sign over TLS: $(cat tls-sign.err)"
jq -r .cert tls-sign.json > tls-x.pem
verify_chain ca.pem tls-x.pem
curl -s --max-time 5 "http://127.0.0.1:$PORT/healthz" > /dev/null && fail "plain HTTP answered on a TLS port"
ok
serve_stop

# Mutual TLS with a CN allow-list.
free_port PORT
serve_start -ca ca.pem -ca-key "$CA_KEY" -config ca-config.json -port "$PORT" -tls-cert tls.pem -tls-key tls-key.pem \
  -mutual-tls-ca ca.pem -mutual-tls-cn '^client-ok$' --workers 2
sign_request x.csr kubernetes > req.json
authsign_body "$AUTH_KEY_HEX" req.json > authreq.json
mtls() {  # NAME: authsign as client NAME (or none); prints the status
  local certs=()
  [ "$1" = none ] || certs=(--cert "$1.pem" --key "$1-key.pem")
  curl -s -o resp.json -w '%{http_code}' --max-time 10 --cacert ca.pem "${certs[@]}" -X POST --data-binary @authreq.json \
    "https://127.0.0.1:$PORT/api/v1/cfssl/authsign" || true
}
n=$(ledger_count)
got=$(mtls client-ok)
[ "$got" = 200 ] && jq -e .success resp.json >/dev/null || fail "mTLS client-ok: $got $(cat resp.json)"
who=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT requester FROM certificates ORDER BY rowid DESC LIMIT 1")
[[ "$who" == "serve:authsign auth_key=key1 client_cn=client-ok remote=127.0.0.1:"* ]] || fail "mTLS requester: $who"
ok
got=$(mtls client-bad)
refused 403 403 "client-bad" "mTLS CN outside the allow-list"
got=$(mtls none)
[ "$got" = 000 ] || fail "mTLS without a client certificate: HTTP $got"
[ "$(ledger_count)" = $((n + 1)) ] || fail "mTLS refusals issued certificates"
ok
serve_stop
finish
