#!/usr/bin/env bash
# Migrating an existing cfssl CA: `hwca key import` moves ca-key.pem into the token. Afterwards the key
# is CKA_SENSITIVE and not extractable (hwca key show and pkcs11-tool agree), the import is in the
# ledger, and certificates issued before (real cfssl, file key) and after (hwca, token key) verify
# against the same, unchanged ca.pem.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
BLOG="$HWCA_SOURCE_DIR/examples/cfssl-blog"

# Before: the blog's CA, made by cfssl with the key in a file, and a certificate it issued.
cfssl gencert -initca "$BLOG/ca-csr.json" 2>/dev/null | cfssljson_bare ca
cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config="$BLOG/ca-config.json" -profile=kubernetes \
  "$BLOG/flanneld-csr.json" 2>/dev/null | cfssljson_bare before
verify_chain ca.pem before.pem
ca_before=$(sha256sum < ca.pem)

# hwca refuses the file as a CA key, and says how to import it.
expect_error "file CA key" "$HWCA" gencert -ca=ca.pem -ca-key=ca-key.pem -config="$BLOG/ca-config.json" "$BLOG/flanneld-csr.json"
grep -q 'hwca key import --from ca-key.pem' "$T/.stderr" || fail "no import hint: $(cat "$T/.stderr")"
ok

# The import.
make_token hwca-ca
KEY=$(key_uri hwca-ca ca)
"$HWCA" key import --from ca-key.pem --key "$KEY" > import.out 2> import.err || fail "key import failed: $(cat import.err)"
ok
grep -q '^hwca: warning: .*ca-key.pem' import.err || fail "no warning to destroy ca-key.pem: $(cat import.err)"
ok
expect_error "importing the same object twice" "$HWCA" key import --from ca-key.pem --key "$KEY"

# hwca key show: sensitive, not extractable, never-extractable false and local false (it was imported).
"$HWCA" key show --key "$KEY" --output json > show.json || fail "key show failed"
for attr in sensitive:true extractable:false never-extractable:false local:false; do
  got=$(jq -r --arg k "${attr%%:*}" '.attributes[$k] | tostring' show.json)
  [ "$got" = "${attr#*:}" ] || fail "key show: ${attr%%:*} is $got, want ${attr#*:}: $(cat show.json)"
  ok
done
[ "$(jq -r .public_key show.json | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl x509 -in ca.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" ] ||
  fail "the token's public key is not ca.pem's"
ok
# A generated key, for contrast: local and never-extractable.
"$HWCA" key generate --key "$(key_uri hwca-ca fresh)" --algo ecdsa-p256 --output json > gen.json || fail "key generate failed"
[ "$(jq -r '.attributes.local, .attributes["never-extractable"], .attributes.sensitive | tostring' gen.json | tr '\n' ' ')" = "true true true " ] ||
  fail "generated key attributes: $(cat gen.json)"
ok

# pkcs11-tool sees the same (its own reading of CKA_SENSITIVE / CKA_EXTRACTABLE / CKA_LOCAL).
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-ca --login --pin "$(cat "$T/hwca-ca.pin")" \
  --list-objects --type privkey > objects.txt 2>&1 || fail "pkcs11-tool: $(cat objects.txt)"
awk '/^Private Key Object/{p=0} /label: *ca$/{p=1} p' objects.txt > ca-object.txt
grep -q 'label: *ca$' ca-object.txt || fail "pkcs11-tool does not list the object 'ca': $(cat objects.txt)"
access=$(sed -n 's/^ *Access: *//p' ca-object.txt)
[[ "$access" == *sensitive* ]] || fail "pkcs11-tool Access: $access"
# An imported key shows neither "extractable" nor "never extractable".
[[ "$access" != *extractable* ]] || fail "pkcs11-tool Access of the imported key: $access"
[[ "$access" != *local* ]] || fail "an imported key claims to be local: $access"
ok
# Reading the private value back must fail.
if pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-ca --login --pin "$(cat "$T/hwca-ca.pin")" \
     --read-object --type privkey --label ca -o extracted.der >/dev/null 2>&1 && [ -s extracted.der ]; then
  fail "pkcs11-tool read the imported private key out of the token"
fi
ok

# The ledger recorded the import.
sqlite3 "$HWCA_HOME/ledger.db" "select kind from events" > kinds.txt || fail "cannot read the ledger"
grep -qx 'key-import' kinds.txt || fail "no key-import event in the ledger: $(cat kinds.txt)"
ok
sqlite3 "$HWCA_HOME/ledger.db" "select * from events where kind = 'key-import'" | grep -q 'ca-key.pem' ||
  fail "the key-import event does not name the source file"
ok

# After: hwca issues with the token key, the CA certificate unchanged; the file key is gone.
shred -u ca-key.pem 2>/dev/null || rm -f ca-key.pem
"$HWCA" gencert -ca=ca.pem -ca-key="$KEY" -config="$BLOG/ca-config.json" -profile=kubernetes \
  "$BLOG/kube-proxy-csr.json" 2>/dev/null | cfssljson_bare after
echo '{"CN":"server","hosts":[""],"key":{"algo":"rsa","size":2048}}' |
  "$HWCA" gencert -config="$BLOG/ca-config.json" -ca=ca.pem -ca-key="$KEY" -hostname=127.0.0.1,localhost - 2>/dev/null |
  cfssljson_bare server
cfssl genkey "$BLOG/flanneld-csr.json" 2>/dev/null | cfssljson_bare resign
"$HWCA" sign -ca=ca.pem -ca-key="$KEY" -config="$BLOG/ca-config.json" resign.csr 2>/dev/null | cfssljson_bare resigned
[ "$(sha256sum < ca.pem)" = "$ca_before" ] || fail "ca.pem changed"
ok
for c in before after server resigned; do
  verify_chain ca.pem "$c.pem"
  [ "$(aki "$c.pem")" = "$(ski ca.pem)" ] || fail "$c: AKI is not the CA's SKI"
  [ "$(issuer_asn1 "$c.pem")" = "$(subject_asn1 ca.pem)" ] || fail "$c: issuer differs from the CA subject"
  ok
done
# One bundle, old and new leaves, one trust anchor.
cat before.pem after.pem > both.pem
[ "$(openssl verify -CAfile ca.pem before.pem after.pem 2>&1)" = "$(printf 'before.pem: OK\nafter.pem: OK')" ] ||
  fail "before/after do not both verify"
ok
# The ledger lists what hwca issued after the import (and not what cfssl issued before).
"$HWCA" ledger list --output json > ledger.json || fail "ledger list failed"
norm() { tr 'A-F' 'a-f' | sed 's/^0*//'; }
serials=$(jq -r '.[].serial' ledger.json | norm)
for c in after server resigned; do
  s=$(openssl x509 -in "$c.pem" -noout -serial | cut -d= -f2 | norm)
  grep -qx "$s" <<<"$serials" || fail "$c (serial $s) is not in the ledger: $serials"
  ok
done
s=$(openssl x509 -in before.pem -noout -serial | cut -d= -f2 | norm)
if grep -qx "$s" <<<"$serials"; then fail "the ledger lists cfssl's certificate"; fi
ok

finish
