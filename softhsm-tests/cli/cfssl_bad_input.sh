#!/usr/bin/env bash
# Malformed and hostile input to the cfssl-compatible commands (gencert, gencert -initca, sign): every
# case must fail with exactly one line "hwca: error: ..." on stderr, a non-zero exit, nothing on stdout,
# and, for --bare, no file written. Table-driven: CSR JSONs and configs are named, cases refer to them.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1

make_token hwca-ca
make_token hwca-other
ROOT=$(key_uri hwca-ca ca)
OTHER=$(key_uri hwca-other other)
mkdir -p csr cfg bare
"$HWCA" gencert -initca -ca-key="$ROOT" - <<<'{"CN":"Bad Input CA","key":{"algo":"ecdsa","size":256}}' | cfssljson_bare ca
"$HWCA" gencert -initca -ca-key="$OTHER" - <<<'{"CN":"Other CA","key":{"algo":"ecdsa","size":256}}' | cfssljson_bare other
ok

long_label=$(printf 'a%.0s' $(seq 1 300))
long_name=$(printf 'abcdefghij%.0s.' $(seq 1 30))example   # 30 labels, 335 characters

# CSR JSONs: csr/NAME.json
csr() { printf '%s' "$2" > "csr/$1.json"; }
csr good '{"CN":"good","hosts":["good.example","127.0.0.1"],"key":{"algo":"ecdsa","size":256}}'
csr broken '{"CN":"x","hosts":["a.example"'
csr trailing '{"CN":"x"} {"CN":"y"}'
csr empty ''
csr array '[{"CN":"x"}]'
csr cn-number '{"CN":5,"key":{"algo":"ecdsa","size":256}}'
csr hosts-string '{"CN":"x","hosts":"a.example"}'
csr hosts-number '{"CN":"x","hosts":[1]}'
csr algo-dsa '{"CN":"x","key":{"algo":"dsa","size":2048}}'
csr rsa-1024 '{"CN":"x","key":{"algo":"rsa","size":1024}}'
csr rsa-16384 '{"CN":"x","key":{"algo":"rsa","size":16384}}'
csr ecdsa-255 '{"CN":"x","key":{"algo":"ecdsa","size":255}}'
csr size-string '{"CN":"x","key":{"algo":"rsa","size":"2048"}}'
csr key-string '{"CN":"x","key":"rsa2048"}'
csr names-object '{"CN":"x","names":{"C":"US"}}'
csr names-number '{"CN":"x","names":[{"C":1}]}'
csr ca-section '{"CN":"x","key":{"algo":"ecdsa","size":256},"ca":{"expiry":"8760h"}}'
csr host-nul '{"CN":"x","hosts":["a\u0000.evil.example"],"key":{"algo":"ecdsa","size":256}}'
csr host-ctrl '{"CN":"x","hosts":["a\u0007b.example"],"key":{"algo":"ecdsa","size":256}}'
csr host-label-300 '{"CN":"x","hosts":["'"$long_label"'.example"],"key":{"algo":"ecdsa","size":256}}'
csr host-name-335 '{"CN":"x","hosts":["'"$long_name"'"],"key":{"algo":"ecdsa","size":256}}'
csr cn-nul '{"CN":"www.bank.example\u0000.evil.example","key":{"algo":"ecdsa","size":256}}'
csr evil-cn '{"CN":"evil.example","hosts":["ok.example"],"key":{"algo":"ecdsa","size":256}}'
csr evil-san '{"CN":"ok.example","hosts":["ok.example","evil.example"],"key":{"algo":"ecdsa","size":256}}'
csr initca-neg '{"CN":"Root","key":{"algo":"ecdsa","size":256},"ca":{"expiry":"-1h"}}'
csr initca-forever '{"CN":"Root","key":{"algo":"ecdsa","size":256},"ca":{"expiry":"forever"}}'
csr initca-rsa '{"CN":"Root","key":{"algo":"rsa","size":2048}}'

# ca-config.json files: cfg/NAME.json
cfg() { printf '%s' "$2" > "cfg/$1.json"; }
cfg good '{"signing":{"default":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]},
  "profiles":{"strict":{"expiry":"8760h","usages":["signing","server auth"],"name_whitelist":"^(ok|good)\\.example$"},
              "onlyok":{"expiry":"8760h","usages":["signing","server auth"],"name_whitelist":"^ok\\.example$"}}}}'
cfg broken '{"signing":{"default":{"expiry":"43800h",'
cfg neg-expiry '{"signing":{"default":{"expiry":"-1h","usages":["signing"]}}}'
cfg zero-expiry '{"signing":{"default":{"expiry":"0s","usages":["signing"]}}}'
cfg forever '{"signing":{"default":{"expiry":"forever","usages":["signing"]}}}'
cfg no-expiry '{"signing":{"default":{"usages":["signing"]}}}'
cfg unknown-usage '{"signing":{"default":{"expiry":"8760h","usages":["signing","frobnicate"]}}}'
cfg no-usages '{"signing":{"default":{"expiry":"8760h"}}}'
cfg empty-usages '{"signing":{"default":{"expiry":"8760h","usages":[]}}}'
cfg usages-string '{"signing":{"default":{"expiry":"8760h","usages":"signing"}}}'
cfg signing-array '{"signing":[{"expiry":"8760h"}]}'
cfg bad-not-before '{"signing":{"default":{"expiry":"8760h","usages":["signing"],"not_before":"yesterday"}}}'
cfg bad-ca-constraint '{"signing":{"default":{"expiry":"8760h","usages":["cert sign"],"ca_constraint":"yes"}}}'
cfg bad-auth-type '{"signing":{"default":{"expiry":"8760h","usages":["signing"]}},"auth_keys":{"k":{"type":"weird","key":"0123456789abcdef"}}}'
cfg bad-auth-hex '{"signing":{"default":{"expiry":"8760h","usages":["signing"],"auth_key":"k"}},"auth_keys":{"k":{"type":"standard","key":"not hex!"}}}'
cfg bad-regexp '{"signing":{"default":{"expiry":"8760h","usages":["signing"],"name_whitelist":"(unclosed"}}}'

printf 'not a certificate\n' > not-a-cert.pem
cp csr/good.json not-a-cert.json
openssl ecparam -name prime256v1 -genkey -noout -out file-ca-key.pem 2>/dev/null

G=("$HWCA" gencert -ca=ca.pem -ca-key="$ROOT")
# gencert with a CSR JSON and a config, the way the blog calls it.
gen() { "${G[@]}" -config="cfg/$2.json" -profile="${3:-kubernetes}" "csr/$1.json"; }

# -- CSR JSON: syntax and types
expect_error "broken JSON" gen broken good
expect_error "two JSON documents" gen trailing good
expect_error "empty CSR file" gen empty good
expect_error "CSR JSON is an array" gen array good
expect_error "CN is a number" gen cn-number good
expect_error "hosts is a string" gen hosts-string good
expect_error "hosts holds a number" gen hosts-number good
expect_error "key is a string" gen key-string good
expect_error "key size is a string" gen size-string good
expect_error "names is an object" gen names-object good
expect_error "names holds a number" gen names-number good
expect_error "nonexistent CSR file" "${G[@]}" -config=cfg/good.json csr/no-such-file.json
expect_error "no CSR argument" "${G[@]}" -config=cfg/good.json
stdin_gen() { printf '%s' '{"CN":"x",' | "${G[@]}" -config=cfg/good.json -; }
expect_error "broken JSON on stdin" stdin_gen
# -- keys
expect_error "unknown key algo dsa" gen algo-dsa good
expect_error "RSA 1024" gen rsa-1024 good
expect_error "RSA 16384" gen rsa-16384 good
expect_error "ecdsa 255" gen ecdsa-255 good
# -- hostile names
expect_error "host with a NUL byte" gen host-nul good
expect_error "host with a control character" gen host-ctrl good
expect_error "host with a 300-character label" gen host-label-300 good
expect_error "host of 335 characters" gen host-name-335 good
expect_error "-hostname with a 300-character label" "${G[@]}" -config=cfg/good.json -hostname="$long_label.example" csr/good.json
expect_error "CN with a NUL byte" gen cn-nul good
expect_error "name_whitelist rejects the CN" gen evil-cn good strict
expect_error "name_whitelist rejects a DNS SAN" gen evil-san good onlyok
expect_error "name_whitelist rejects a -hostname" "${G[@]}" -config=cfg/good.json -profile=onlyok -hostname=ok.example,evil.example csr/good.json
# -- the ca section
expect_error "ca section without -initca" gen ca-section good
expect_error "-initca with ca.expiry -1h" "$HWCA" gencert -initca -ca-key="$(key_uri hwca-ca neg)" csr/initca-neg.json
expect_error "-initca with ca.expiry forever" "$HWCA" gencert -initca -ca-key="$(key_uri hwca-ca forever)" csr/initca-forever.json
expect_error "-initca asking RSA for an existing ECDSA key" "$HWCA" gencert -initca -ca-key="$ROOT" csr/initca-rsa.json
expect_error "-initca together with -ca" "$HWCA" gencert -initca -ca=ca.pem -ca-key="$ROOT" csr/good.json
expect_error "-initca without -ca-key" "$HWCA" gencert -initca csr/good.json
# -- ca-config.json
expect_error "broken config JSON" gen good broken
expect_error "nonexistent config" "${G[@]}" -config=cfg/no-such.json csr/good.json
expect_error "expiry -1h" gen good neg-expiry
expect_error "expiry 0s" gen good zero-expiry
expect_error "expiry forever" gen good forever
expect_error "profile without expiry" gen good no-expiry
expect_error "unknown usage" gen good unknown-usage
expect_error "profile without usages" gen good no-usages
expect_error "profile with an empty usage list" gen good empty-usages
expect_error "usages is a string" gen good usages-string
expect_error "signing is an array" gen good signing-array
expect_error "not_before is not RFC 3339" gen good bad-not-before
expect_error "ca_constraint is a string" gen good bad-ca-constraint
expect_error "auth key of an unknown type" gen good bad-auth-type
expect_error "auth key that is not hex" gen good bad-auth-hex
expect_error "name_whitelist that is not a regexp" gen good bad-regexp
expect_error "profile missing under --strict-profile" "${G[@]}" -config=cfg/good.json -profile=kubernetes --strict-profile csr/good.json
# -- the CA certificate and key
expect_error "missing -ca" "$HWCA" gencert -ca-key="$ROOT" -config=cfg/good.json csr/good.json
expect_error "empty -ca=" "$HWCA" gencert -ca= -ca-key="$ROOT" -config=cfg/good.json csr/good.json
expect_error "missing -ca-key" "$HWCA" gencert -ca=ca.pem -config=cfg/good.json csr/good.json
expect_error "-ca is not a certificate" "$HWCA" gencert -ca=not-a-cert.pem -ca-key="$ROOT" -config=cfg/good.json csr/good.json
expect_error "-ca is a JSON file" "$HWCA" gencert -ca=not-a-cert.json -ca-key="$ROOT" -config=cfg/good.json csr/good.json
expect_error "-ca does not exist" "$HWCA" gencert -ca=no-such-ca.pem -ca-key="$ROOT" -config=cfg/good.json csr/good.json
expect_error "-ca-key does not match -ca" "$HWCA" gencert -ca=ca.pem -ca-key="$OTHER" -config=cfg/good.json csr/good.json
expect_error "-ca-key names no object" "$HWCA" gencert -ca=ca.pem -ca-key="$(key_uri hwca-ca no-such-object)" -config=cfg/good.json csr/good.json
expect_error "-ca-key names no token" "$HWCA" gencert -ca=ca.pem -ca-key="$(key_uri no-such-token ca)" -config=cfg/good.json csr/good.json
expect_error "-ca-key PIN file missing" "$HWCA" gencert -ca=ca.pem \
  -ca-key="pkcs11:token=hwca-ca;object=ca?module-path=$SOFTHSM_MODULE&pin-source=file:$T/no-such.pin" -config=cfg/good.json csr/good.json
printf 'wrong-pin' > "$T/wrong.pin"; chmod 600 "$T/wrong.pin"
expect_error "-ca-key with a wrong PIN" "$HWCA" gencert -ca=ca.pem \
  -ca-key="pkcs11:token=hwca-ca;object=ca?module-path=$SOFTHSM_MODULE&pin-source=file:$T/wrong.pin" -config=cfg/good.json csr/good.json
expect_error "-ca-key is a plain file path" "$HWCA" gencert -ca=ca.pem -ca-key=file-ca-key.pem -config=cfg/good.json csr/good.json
grep -q 'hwca key import' "$T/.stderr" || fail "no 'hwca key import' hint for a file CA key: $(cat "$T/.stderr")"
ok
expect_error "-ca-key is a file: URI without --allow-file-ca-key" "$HWCA" gencert -ca=ca.pem -ca-key="file:$T/file-ca-key.pem" -config=cfg/good.json csr/good.json
expect_error "pin-value= in the key URI" "$HWCA" gencert -ca=ca.pem \
  -ca-key="pkcs11:token=hwca-ca;object=ca?module-path=$SOFTHSM_MODULE&pin-value=$(cat "$T/hwca-ca.pin")" -config=cfg/good.json csr/good.json
expect_error "pin-value= in the path part of the key URI" "$HWCA" gencert -initca \
  -ca-key="pkcs11:token=hwca-ca;object=new;pin-value=1234?module-path=$SOFTHSM_MODULE" csr/good.json
expect_error "unknown option" "${G[@]}" -config=cfg/good.json --frobnicate csr/good.json
# -- sign
printf 'garbage\n' > garbage.csr
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf-key.pem -subj /CN=leaf -out leaf.csr 2>/dev/null
# The same request with one byte of its subject changed: the signature no longer matches.
openssl req -in leaf.csr -outform DER -out leaf.der
sed 's/leaf/lEaf/' leaf.der > tampered.der
cmp -s leaf.der tampered.der && fail "could not tamper with the CSR"
expect_error "sign: CSR is garbage" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/good.json garbage.csr
expect_error "sign: CSR signature does not verify" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/good.json tampered.der
expect_error "sign: no CSR" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/good.json
expect_error "sign: --csr and a file argument" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" --csr leaf.csr leaf.csr
expect_error "sign: unknown profile, no config, --strict-profile" "$HWCA" sign --ca ca.pem --ca-key "$ROOT" --csr leaf.csr --profile admin --strict-profile --bare bare/admin
expect_error "sign: -ca-key does not match -ca" "$HWCA" sign -ca=ca.pem -ca-key="$OTHER" -config=cfg/good.json leaf.csr
expect_error "sign: expiry 0s" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/zero-expiry.json leaf.csr
expect_error "sign: -hostname with a 300-character label" "$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/good.json -hostname="$long_label.example" leaf.csr
# -- --bare: the same refusals, and nothing may be written
bare_case() {
  local desc=$1 name=$2; shift 2
  expect_error "--bare: $desc" "$@" --bare "bare/$name"
  [ -z "$(ls -A bare)" ] || fail "--bare: $desc: files written: $(ls -A bare)"
  ok
}
bare_case "RSA 1024" rsa1024 "${G[@]}" -config=cfg/good.json csr/rsa-1024.json
bare_case "expiry -1h" neg "${G[@]}" -config=cfg/neg-expiry.json csr/good.json
bare_case "name_whitelist" wl "${G[@]}" -config=cfg/good.json -profile=strict csr/evil-cn.json
bare_case "-ca-key does not match" mismatch "$HWCA" gencert -ca=ca.pem -ca-key="$OTHER" -config=cfg/good.json csr/good.json
bare_case "host with NUL" nul "${G[@]}" -config=cfg/good.json csr/host-nul.json
bare_case "sign: tampered CSR" tampered "$HWCA" sign --ca ca.pem --ca-key "$ROOT" --csr tampered.der --profile server
bare_case "sign: -ca not a certificate" notcert "$HWCA" sign --ca not-a-cert.pem --ca-key "$ROOT" --csr leaf.csr --profile client
expect_error "--bare into a folder that does not exist" "${G[@]}" -config=cfg/good.json csr/good.json --bare "$T/no/such/dir/x"
[ ! -e "$T/no" ] || fail "--bare created folders"
ok
# An existing output must not be half-overwritten by a failing run.
"${G[@]}" -config=cfg/good.json csr/good.json --bare bare/keep 2>/dev/null
before=$(cat bare/keep.pem bare/keep-key.pem | sha256sum)
expect_error "--bare over existing files, failing" "${G[@]}" -config=cfg/neg-expiry.json csr/good.json --bare bare/keep
[ "$(cat bare/keep.pem bare/keep-key.pem | sha256sum)" = "$before" ] || fail "a failing --bare run changed existing files"
ok

# A CSR asking for CA:TRUE through a profile without ca_constraint: cfssl signs it, and so does hwca,
# but the certificate is not a CA.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout evil-key.pem -subj /CN=evil-ca \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out evil.csr 2>/dev/null
openssl req -in evil.csr -noout -text | grep -q 'CA:TRUE' || fail "the test CSR does not ask for CA:TRUE"
"$HWCA" sign -ca=ca.pem -ca-key="$ROOT" -config=cfg/good.json -profile=kubernetes evil.csr 2>/dev/null | cfssljson_bare evil
[ "$(ext_text evil.pem basicConstraints)" = "$(printf 'X509v3 Basic Constraints: critical\n    CA:FALSE')" ] ||
  fail "a CSR asking CA:TRUE got: $(ext_text evil.pem basicConstraints)"
ok
ext_text evil.pem keyUsage | grep -q 'Certificate Sign' && fail "a CSR asking CA:TRUE got keyCertSign"
ok
# ... and what it signs does not verify.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout victim-key.pem -subj /CN=victim -out victim.csr 2>/dev/null
openssl x509 -req -in victim.csr -CA evil.pem -CAkey evil-key.pem -CAcreateserial -days 1 -out victim.pem 2>/dev/null
cat evil.pem > evil-chain.pem
if openssl verify -CAfile ca.pem -untrusted evil-chain.pem victim.pem >/dev/null 2>&1; then
  fail "a certificate signed by the CA:FALSE leaf verified"
fi
ok
# The same through gencert, profile with no ca_constraint, using a ca-less config: still no CA.
"${G[@]}" -config=cfg/good.json csr/good.json 2>/dev/null | cfssljson_bare good
[ "$(ext_value good.pem basicConstraints)" = "CA:FALSE" ] || fail "gencert leaf: $(ext_value good.pem basicConstraints)"
ok

finish
