#!/usr/bin/env bash
# The offline-root ceremony of docs/ceremony.md: root key in token hwca-root, intermediate key generated
# inside token hwca-intermediate, the intermediate's CSR signed by its token key, its certificate signed
# by the root through a ca_constraint profile; then the root token is unplugged and leaves are issued by
# the intermediate alone. leaf -> intermediate -> root verifies with openssl and certtool.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1

make_token hwca-root
root_dir=$(ls "$T/softhsm/tokens")
make_token hwca-intermediate
[ "$(ls "$T/softhsm/tokens" | wc -l)" = 2 ] || fail "expected two token folders"
for f in hwca-root.pin hwca-intermediate.pin; do
  [ "$(stat -c %a "$T/$f")" = 600 ] || fail "$f is not 0600"
done
ok
ROOT=$(key_uri hwca-root root)
INT=$(key_uri hwca-intermediate intermediate)

cat > root-csr.json <<'EOF'
{"CN":"Example Root CA","key":{"algo":"ecdsa","size":384},"names":[{"C":"US","O":"Example","OU":"PKI"}],"ca":{"expiry":"87600h"}}
EOF
cat > int-csr.json <<'EOF'
{"CN":"Example Intermediate CA","key":{"algo":"ecdsa","size":256},"names":[{"C":"US","O":"Example","OU":"PKI"}]}
EOF
cat > ca-config.json <<'EOF'
{"signing":{
  "default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]},
  "profiles":{
    "intermediate":{"expiry":"43800h","usages":["cert sign","crl sign"],
                    "ca_constraint":{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}},
    "kubernetes":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]}}}}
EOF

# 1. The root, its key generated in hwca-root.
"$HWCA" gencert -initca -ca-key="$ROOT" root-csr.json | cfssljson_bare root
[ ! -e root-key.pem ] || fail "a root key file was written"
verify_chain root.pem root.pem
[ "$(validity_seconds root.pem)" = $((87600 * 3600)) ] || fail "root validity $(validity_seconds root.pem)"
ok

# 2. The intermediate key, generated inside hwca-intermediate, and a CSR signed by it.
"$HWCA" key generate --key "$INT" --algo ecdsa-p256 --output json > int-key.json || fail "key generate failed"
[ "$(jq -r '.attributes.local, .attributes["never-extractable"] | tostring' int-key.json | tr '\n' ' ')" = "true true " ] ||
  fail "intermediate key attributes: $(cat int-key.json)"
ok
"$HWCA" gencert -initca -ca-key="$INT" int-csr.json | cfssljson_bare int-self
openssl req -in int-self.csr -noout -verify 2>&1 | grep -q 'verify OK' || fail "int-self.csr signature does not verify"
[ "$(openssl req -in int-self.csr -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(jq -r .public_key int-key.json | openssl pkey -pubin -outform DER | sha256sum)" ] ||
  fail "int-self.csr does not carry the token key generated in step 2"
ok

# 3. The root signs the intermediate through the ca_constraint profile.
"$HWCA" sign -ca=root.pem -ca-key="$ROOT" -config=ca-config.json -profile=intermediate int-self.csr | cfssljson_bare int
[ "$(ext_line int.pem basicConstraints)" = "X509v3 Basic Constraints: critical CA:TRUE, pathlen:0" ] ||
  fail "intermediate basicConstraints: $(ext_text int.pem basicConstraints)"
[ "$(ext_line int.pem keyUsage)" = "X509v3 Key Usage: critical Certificate Sign, CRL Sign" ] ||
  fail "intermediate keyUsage: $(ext_text int.pem keyUsage)"
[ "$(aki int.pem)" = "$(ski root.pem)" ] || fail "intermediate AKI is not the root's SKI"
[ "$(issuer_asn1 int.pem)" = "$(subject_asn1 root.pem)" ] || fail "intermediate issuer is not the root subject"
[ "$(subject_asn1 int.pem)" = "$(subject_asn1 int-self.pem)" ] || fail "intermediate subject changed"
[ "$(sig_alg int.pem)" = ecdsa-with-SHA384 ] || fail "intermediate signed with $(sig_alg int.pem)"
ok
verify_chain root.pem int.pem

# 4. Unplug the root: its token folder goes to the safe.
mkdir "$T/safe"
mv "$T/softhsm/tokens/$root_dir" "$T/safe/"
softhsm2-util --show-slots 2>/dev/null | grep -q 'hwca-root' && fail "hwca-root is still visible"
ok
expect_error "the root is offline" "$HWCA" sign -ca=root.pem -ca-key="$ROOT" -config=ca-config.json -profile=intermediate int-self.csr

# 5. Leaves from the intermediate alone.
echo '{"CN":"server","hosts":[""],"key":{"algo":"rsa","size":2048}}' |
  "$HWCA" gencert -ca=int.pem -ca-key="$INT" -config=ca-config.json -profile=kubernetes -hostname=127.0.0.1,localhost - |
  cfssljson_bare server
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client-key.pem -subj "/O=system:masters/CN=admin" \
  -out client.csr 2>/dev/null
"$HWCA" sign --ca int.pem --ca-key "$INT" --csr client.csr --profile client --bare client 2>/dev/null ||
  fail "sign --profile client --bare failed"
ok
for leaf in server client; do
  verify_chain root.pem "$leaf.pem" int.pem
  verify_fails root.pem "$leaf.pem"   # not without the intermediate
  [ "$(aki "$leaf.pem")" = "$(ski int.pem)" ] || fail "$leaf: AKI is not the intermediate's SKI"
  ok
done
ext_text client.pem extendedKeyUsage | grep -q 'TLS Web Client Authentication' || fail "client EKU: $(ext_text client.pem extendedKeyUsage)"
ok
# The full chain as servers send it, checked by certtool from the leaf up.
cat server.pem int.pem > server-chain.pem
certtool --verify --load-ca-certificate root.pem --infile server-chain.pem 2>&1 | grep -q 'Chain verification output: Verified' ||
  fail "certtool rejects server-chain.pem"
ok

# pathlen:0 holds: a CA below the intermediate (its key in software here) cannot issue a valid leaf.
"$HWCA" gencert -ca=int.pem -ca-key="$INT" -config=ca-config.json -profile=intermediate - \
  <<<'{"CN":"Too Deep CA","key":{"algo":"ecdsa","size":256}}' 2>/dev/null | cfssljson_bare deep
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout deep-leaf-key.pem -subj /CN=deep-leaf -out deep-leaf.csr 2>/dev/null
openssl x509 -req -in deep-leaf.csr -CA deep.pem -CAkey deep-key.pem -CAcreateserial -days 1 -out deep-leaf.pem 2>/dev/null ||
  fail "could not make the deep leaf"
cat int.pem deep.pem > deep-untrusted.pem
if openssl verify -CAfile root.pem -untrusted deep-untrusted.pem deep-leaf.pem >/dev/null 2>&1; then
  fail "a chain longer than the intermediate's pathlen:0 verified"
fi
ok

# 6. Plug the root back in for the next ceremony: it signs again, with the same key.
mv "$T/safe/$root_dir" "$T/softhsm/tokens/"
"$HWCA" sign -ca=root.pem -ca-key="$ROOT" -config=ca-config.json -profile=intermediate int-self.csr | cfssljson_bare int2
verify_chain root.pem int2.pem

# The ledger holds the intermediate and the leaves.
"$HWCA" ledger list --output json > ledger.json || fail "ledger list failed"
norm() { tr 'A-F' 'a-f' | sed 's/^0*//'; }
serials=$(jq -r '.[].serial' ledger.json | norm)
for c in root int server client int2; do
  s=$(openssl x509 -in "$c.pem" -noout -serial | cut -d= -f2 | norm)
  grep -qx "$s" <<<"$serials" || fail "$c (serial $s) is not in the ledger"
  ok
done

finish
