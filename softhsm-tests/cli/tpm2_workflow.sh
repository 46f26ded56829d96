#!/usr/bin/env bash
# The CA key in a TPM 2.0 (swtpm), end to end with the hwca binary: `key generate/show` in both forms
# (persistent handle with an auth value, TSS2 PRIVATE KEY blob), `ca init`, `sign`, `gencert -initca` +
# `gencert`, the cfssl blog workflow, all verified with openssl; and interop with Debian's tpm2-openssl
# (it reads hwca's blob and signs with it under hwca's root; hwca uses a key tpm2-openssl made).
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-tpm2.bash" || exit 1
export TSS2_LOG=all+NONE

start_swtpm main
(umask 077; printf 'tpm-auth-value\n' > "$T/auth")
HKEY=$(tpm_handle_uri 0x81000100 "$T/auth")
FKEY=$(tpm_file_uri "$T/root.tss2.pem")

# key generate / show: a persistent ECDSA P-256 key with an auth value.
"$HWCA" key generate --key "$HKEY" --algo ecdsa-p256 --output json > gen-h.json || fail "key generate (handle) failed"
[ "$(jq -r '.backend, .algorithm, .hardware' gen-h.json | tr '\n' ' ')" = "tpm2 ecdsa-p256 true " ] || fail "gen-h: $(cat gen-h.json)"
"$HWCA" key show --key "$HKEY" --output json > show-h.json || fail "key show (handle) failed"
[ "$(jq -r '.attributes | [.handle, .fixedTPM, .fixedParent, .sensitiveDataOrigin, .userWithAuth, .sign, .decrypt, .restricted] | map(tostring) | join(" ")' show-h.json)" = \
  "0x81000100 true true true true true false false" ] || fail "handle key attributes: $(cat show-h.json)"
ok
# tpm2-tools sees the same key at the handle.
TPM2TOOLS_TCTI=$SWTPM_TCTI tpm2_readpublic -c 0x81000100 -f pem -o h-pub.pem > /dev/null || fail "tpm2_readpublic"
[ "$(openssl pkey -pubin -in h-pub.pem -outform DER | sha256sum)" = \
  "$(jq -r .public_key show-h.json | openssl pkey -pubin -outform DER | sha256sum)" ] || fail "tpm2_readpublic shows another key"
ok

# A blob, RSA-2048, no auth value.
"$HWCA" key generate --key "$FKEY" --algo rsa-2048 > gen-f.txt || fail "key generate (file) failed"
grep -q '^algorithm:  rsa-2048$' gen-f.txt || fail "gen-f: $(cat gen-f.txt)"
[ "$(stat -c %a "$T/root.tss2.pem")" = 600 ] || fail "blob mode $(stat -c %a "$T/root.tss2.pem")"
head -1 "$T/root.tss2.pem" | grep -qx -- '-----BEGIN TSS2 PRIVATE KEY-----' || fail "not a TSS2 PRIVATE KEY"
# The blob's ASN.1: OID 2.23.133.10.1.3, emptyAuth [0] TRUE, parent 0x40000001, two OCTET STRINGs.
openssl asn1parse -in "$T/root.tss2.pem" > blob.asn1 || fail "asn1parse"
grep -q 'OBJECT *:2.23.133.10.1.3' blob.asn1 && grep -q 'BOOLEAN *:255' blob.asn1 && grep -q 'INTEGER *:40000001' blob.asn1 &&
  [ "$(grep -c 'OCTET STRING' blob.asn1)" = 2 ] || fail "blob ASN.1: $(cat blob.asn1)"
"$HWCA" key show --key "$FKEY" --output json > show-f.json || fail "key show (file) failed"
[ "$(jq -r '.attributes | [.parent, ."empty-auth", .fixedTPM, .sign, .decrypt] | map(tostring) | join("|")' show-f.json)" = \
  "0x40000001 (owner hierarchy primary)|true|true|true|false" ] || fail "file key attributes: $(cat show-f.json)"
ok
# tpm2-openssl reads hwca's blob: the same public key.
TPM2OPENSSL_TCTI=$SWTPM_TCTI openssl pkey -provider tpm2 -provider default -in "$T/root.tss2.pem" -pubout -out f-pub.pem ||
  fail "tpm2-openssl cannot read hwca's blob"
[ "$(openssl pkey -pubin -in f-pub.pem -outform DER | sha256sum)" = \
  "$(jq -r .public_key show-f.json | openssl pkey -pubin -outform DER | sha256sum)" ] || fail "tpm2-openssl sees another key"
ok

# ca init with the blob, sign a CSR with it; and tpm2-openssl signs under the same root.
"$HWCA" ca init --key "$FKEY" --subject '/CN=TPM Root' --out root.pem > /dev/null || fail "ca init failed"
openssl verify -CAfile root.pem root.pem > /dev/null || fail "root.pem does not verify"
[ "$(openssl x509 -in root.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl pkey -pubin -in f-pub.pem -outform DER | sha256sum)" ] || fail "root.pem holds another key"
ok
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf.example -out leaf.csr 2>/dev/null
"$HWCA" sign --ca root.pem --ca-key "$FKEY" --hostname leaf.example leaf.csr > sign.json || fail "hwca sign failed"
jq -r .cert sign.json > leaf.pem
openssl verify -CAfile root.pem leaf.pem > /dev/null || fail "hwca sign: leaf does not verify"
ok
TPM2OPENSSL_TCTI=$SWTPM_TCTI openssl x509 -provider tpm2 -provider default -req -in leaf.csr -CA root.pem \
  -CAkey "$T/root.tss2.pem" -set_serial 7 -days 1 -out leaf-tpm2-openssl.pem 2>/dev/null || fail "openssl x509 -CAkey blob failed"
openssl verify -CAfile root.pem leaf-tpm2-openssl.pem > /dev/null || fail "tpm2-openssl's certificate does not verify under hwca's root"
ok

# gencert -initca with the persistent key (it exists: reused), then gencert with it.
echo '{"CN":"TPM Handle Root","key":{"algo":"ecdsa","size":256}}' > ca-csr.json
echo '{"CN":"www.example","hosts":["www.example"],"key":{"algo":"ecdsa","size":256}}' > www-csr.json
"$HWCA" gencert -initca -ca-key="$HKEY" ca-csr.json > ca.json || fail "gencert -initca failed"
jq -r .cert ca.json > hroot.pem
[ "$(jq -r .key ca.json)" = "" ] || [ "$(jq -r .key ca.json)" = null ] || fail "gencert -initca printed a key for a TPM CA"
openssl verify -CAfile hroot.pem hroot.pem > /dev/null || fail "hroot does not verify"
[ "$(openssl x509 -in hroot.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl pkey -pubin -in h-pub.pem -outform DER | sha256sum)" ] || fail "hroot.pem is not the TPM handle key"
ok
"$HWCA" gencert -ca=hroot.pem -ca-key="$HKEY" www-csr.json > www.json || fail "gencert failed"
jq -r .cert www.json > www.pem
openssl verify -CAfile hroot.pem www.pem > /dev/null || fail "www.pem does not verify"
[ "$(openssl x509 -in www.pem -noout -text | grep -c 'ecdsa-with-SHA256')" -ge 1 ] || fail "www.pem signature algorithm"
ok
# gencert -initca generates the key in the TPM when it is absent (P-384 blob).
echo '{"CN":"TPM P-384 Root","key":{"algo":"ecdsa","size":384}}' > ca384-csr.json
"$HWCA" gencert -initca -ca-key="$(tpm_file_uri "$T/p384.tss2.pem")" ca384-csr.json > ca384.json || fail "gencert -initca (new key) failed"
jq -r .cert ca384.json > root384.pem
openssl verify -CAfile root384.pem root384.pem > /dev/null || fail "root384 does not verify"
openssl x509 -in root384.pem -noout -text | grep -q 'ecdsa-with-SHA384' || fail "root384 signature is not ecdsa-with-SHA384"
[ -f "$T/p384.tss2.pem" ] || fail "gencert -initca did not keep the key blob"
ok

# An RSA-3072 persistent key: ca init + sign (sha384WithRSAEncryption).
R3=$(tpm_handle_uri 0x81000103)
"$HWCA" key generate --key "$R3" --algo rsa-3072 > /dev/null || fail "rsa-3072 generate"
"$HWCA" ca init --key "$R3" --subject '/CN=TPM RSA-3072 Root' --out r3.pem > /dev/null || fail "ca init rsa-3072 failed"
"$HWCA" sign --ca r3.pem --ca-key "$R3" --hostname leaf.example leaf.csr > r3-sign.json || fail "sign rsa-3072 failed"
jq -r .cert r3-sign.json > r3-leaf.pem
openssl verify -CAfile r3.pem r3-leaf.pem > /dev/null || fail "rsa-3072 leaf does not verify"
openssl x509 -in r3-leaf.pem -noout -text | grep -q 'sha384WithRSAEncryption' || fail "rsa-3072 leaf signature algorithm"
ok

# The cfssl blog workflow, its CA key generated in the TPM by -initca (through the real cfssljson).
if command -v cfssljson > /dev/null; then
  HWCA="$HWCA" bash "$HWCA_SOURCE_DIR/examples/cfssl-blog/run.sh" "$(tpm_file_uri "$T/blog.tss2.pem")" "$T/blog" > blog.out 2> blog.err ||
    fail "cfssl blog workflow with a TPM key failed: $(cat blog.err)"
  for n in flanneld server client kubernetes kube-proxy; do
    openssl verify -CAfile "$T/blog/ca.pem" "$T/blog/$n.pem" > /dev/null || fail "blog $n.pem does not verify"
  done
  "$HWCA" key show --key "$(tpm_file_uri "$T/blog.tss2.pem")" | grep -q '^algorithm:  rsa-2048$' || fail "blog CA key is not in the TPM"
  ok
fi

# hwca k8s init with all three CA keys in the TPM (two blobs, one persistent), generated by the first run:
# three CA keys open at once never run swtpm out of its three transient slots.
sed -E -e "s#key: \"pkcs11:[^\"]*object=front-proxy-ca\?[^\"]*\"#key: \"tpm2:handle=0x81000150?tcti=$SWTPM_TCTI\"#" \
  -e "s#key: \"pkcs11:[^\"]*object=([a-z-]+)\?[^\"]*\"#key: \"tpm2:file=$T/\1.tss2.pem?tcti=$SWTPM_TCTI\"#" \
  "$HWCA_SOURCE_DIR/examples/loopback-cluster.yaml" > cluster.yaml
[ "$(grep -c 'key: "tpm2:' cluster.yaml)" = 3 ] || fail "cluster.yaml: $(grep 'key:' cluster.yaml)"
"$HWCA" k8s init --config cluster.yaml --out k8s > k8s.out 2>&1 || fail "k8s init with TPM keys failed: $(tail -3 k8s.out)"
[ -f "$T/kubernetes-ca.tss2.pem" ] && [ -f "$T/etcd-ca.tss2.pem" ] || fail "k8s init did not make the CA key blobs"
"$HWCA" key show --key "$(tpm_handle_uri 0x81000150)" > /dev/null || fail "front-proxy CA key is not at 0x81000150"
openssl verify -CAfile k8s/pki/ca.crt k8s/pki/apiserver.crt > /dev/null || fail "apiserver.crt"
openssl verify -CAfile k8s/pki/etcd/ca.crt k8s/pki/etcd/server.crt > /dev/null || fail "etcd/server.crt"
openssl verify -CAfile k8s/pki/front-proxy-ca.crt k8s/pki/front-proxy-client.crt > /dev/null || fail "front-proxy-client.crt"
[ "$(openssl x509 -in k8s/pki/ca.crt -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$("$HWCA" key show --key "$(tpm_file_uri "$T/kubernetes-ca.tss2.pem")" --output json | jq -r .public_key | openssl pkey -pubin -outform DER | sha256sum)" ] ||
  fail "pki/ca.crt is not the TPM key's"
ok

# A key made by tpm2-openssl (`openssl genpkey -provider tpm2`) works as an hwca CA key.
TPM2OPENSSL_TCTI=$SWTPM_TCTI openssl genpkey -provider tpm2 -provider default -algorithm EC -pkeyopt group:P-256 \
  -out "$T/made-by-openssl.tss2.pem" 2> /dev/null || fail "openssl genpkey -provider tpm2 failed"
"$HWCA" ca init --key "$(tpm_file_uri "$T/made-by-openssl.tss2.pem")" --subject '/CN=tpm2-openssl key' --out other.pem > /dev/null ||
  fail "ca init with tpm2-openssl's key failed"
openssl verify -CAfile other.pem other.pem > /dev/null || fail "other.pem does not verify"
ok

finish
