#!/usr/bin/env bash
# The seed blog's whole cfssl workflow (examples/cfssl-blog/run.sh) with hwca in place of cfssl and the
# CA key in SoftHSM2: every output goes through the real cfssljson -bare, and every certificate
# verifies with openssl and certtool. Also: hwca's JSON on stdout has cfssl's exact shape, the four Go
# flag spellings work, and -initca reuses an existing token key.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
BLOG="$HWCA_SOURCE_DIR/examples/cfssl-blog"

# The example files are the blog's, as written.
[ "$(cat "$BLOG/ca-config.json")" = \
  '{"signing":{"default":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}}' ] ||
  fail "examples/cfssl-blog/ca-config.json is not the blog's"
[ "$(jq -c . "$BLOG/ca-csr.json")" = '{"CN":"CA","key":{"algo":"rsa","size":2048}}' ] || fail "ca-csr.json is not the blog's"
[ "$(jq -r '.hosts | length' "$BLOG/k8s-csr.json")" = 11 ] || fail "k8s-csr.json hosts"
[ "$(jq -c .names "$BLOG/kube-proxy-csr.json")" = '[{"C":"CN","ST":"FuZhou","L":"FuZhou","O":"k8s","OU":"System"}]' ] ||
  fail "kube-proxy-csr.json names"
ok

make_token hwca-ca
KEY=$(key_uri hwca-ca ca)
HWCA="$HWCA" bash "$BLOG/run.sh" "$KEY" "$T/out" > run.out 2> run.err || fail "run.sh failed: $(cat run.err)"
ok
# Three -profile=kubernetes runs against a config with only a default profile: three warnings, no errors.
[ "$(grep -c '^hwca: warning: .*kubernetes' run.err)" = 3 ] || fail "expected 3 profile warnings: $(cat run.err)"
! grep -v '^hwca: warning: ' run.err | grep -q . || fail "unexpected stderr from run.sh: $(cat run.err)"
ok
[ "$(wc -l < run.out)" = 6 ] || fail "run.sh should print one line per certificate: $(cat run.out)"
ok

cd "$T/out"
[ -f ca.pem ] && [ -f ca.csr ] && [ ! -e ca-key.pem ] || fail "ca files: $(ls)"
ok
for n in flanneld server client kubernetes kube-proxy; do
  [ -f "$n.pem" ] && [ -f "$n.csr" ] && [ -f "$n-key.pem" ] || fail "$n: missing files: $(ls)"
  [ "$(stat -c %a "$n-key.pem")" = 600 ] || fail "$n-key.pem mode $(stat -c %a "$n-key.pem")"
  ok
done

# The CA: cfssl's -initca policy.
verify_chain ca.pem ca.pem
[ "$(openssl x509 -in ca.pem -noout -subject -nameopt RFC2253)" = "subject=CN=CA" ] || fail "ca subject"
[ "$(validity_seconds ca.pem)" = $((43800 * 3600)) ] || fail "ca validity $(validity_seconds ca.pem)"
[ "$(ext_line ca.pem keyUsage)" = "X509v3 Key Usage: critical Certificate Sign, CRL Sign" ] ||
  fail "ca keyUsage: $(ext_text ca.pem keyUsage)"
[ "$(ext_line ca.pem basicConstraints)" = "X509v3 Basic Constraints: critical CA:TRUE" ] ||
  fail "ca basicConstraints: $(ext_text ca.pem basicConstraints)"
[ -n "$(ski ca.pem)" ] && [ -z "$(aki ca.pem)" ] && [ -z "$(ext_text ca.pem subjectAltName)" ] || fail "ca SKI/AKI/SAN"
[ "$(sig_alg ca.pem)" = sha256WithRSAEncryption ] || fail "ca signature $(sig_alg ca.pem)"
ok
openssl req -in ca.csr -noout -verify 2>&1 | grep -q 'verify OK' || fail "ca.csr does not verify"
[ "$(openssl req -in ca.csr -noout -pubkey | sha256sum)" = "$(openssl x509 -in ca.pem -noout -pubkey | sha256sum)" ] ||
  fail "ca.csr and ca.pem hold different keys"
ok
"$HWCA" key show --key "$KEY" --output json > key.json || fail "key show failed"
[ "$(jq -r '.attributes.sensitive, .attributes.local, .attributes["never-extractable"] | tostring' key.json | tr '\n' ' ')" = "true true true " ] ||
  fail "the CA key is not a token-generated, sensitive key: $(cat key.json)"
[ "$(jq -r .public_key key.json | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl x509 -in ca.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" ] || fail "token key is not ca.pem's"
ok

# The leaves: the blog's default profile (43800h, signing + key encipherment, server + client auth).
for n in flanneld server client kubernetes kube-proxy; do
  verify_chain ca.pem "$n.pem"
  same_pubkey "$n.pem" "$n-key.pem"
  # 43800h, like the CA: hwca ends it at the CA's notAfter when issued in a later minute than the CA.
  leaf_validity_ok "$n.pem" ca.pem $((43800 * 3600))
  [ "$(ext_line "$n.pem" keyUsage)" = "X509v3 Key Usage: critical Digital Signature, Key Encipherment" ] ||
    fail "$n keyUsage: $(ext_text "$n.pem" keyUsage)"
  [ "$(ext_value "$n.pem" extendedKeyUsage)" = "TLS Web Server Authentication, TLS Web Client Authentication" ] ||
    fail "$n EKU: $(ext_value "$n.pem" extendedKeyUsage)"
  [ "$(ext_value "$n.pem" basicConstraints)" = "CA:FALSE" ] || fail "$n basicConstraints"
  [ "$(aki "$n.pem")" = "$(ski ca.pem)" ] && [ -n "$(ski "$n.pem")" ] || fail "$n key identifiers"
  [ "$(openssl req -in "$n.csr" -noout -subject -nameopt RFC2253)" = \
    "$(openssl x509 -in "$n.pem" -noout -subject -nameopt RFC2253)" ] || fail "$n.csr subject differs from $n.pem"
  openssl req -in "$n.csr" -noout -verify 2>&1 | grep -q 'verify OK' || fail "$n.csr does not verify"
  ok
done
blog_subject() { echo "subject=CN=$1,OU=System,O=k8s,L=FuZhou,ST=FuZhou,C=CN"; }
[ "$(openssl x509 -in flanneld.pem -noout -subject -nameopt RFC2253)" = "$(blog_subject flanneld)" ] || fail "flanneld subject"
[ "$(openssl x509 -in kube-proxy.pem -noout -subject -nameopt RFC2253)" = "$(blog_subject system:kube-proxy)" ] || fail "kube-proxy subject"
[ "$(openssl x509 -in kubernetes.pem -noout -subject -nameopt RFC2253)" = "$(blog_subject kubernetes)" ] || fail "kubernetes subject"
ok
[ "$(ext_value kubernetes.pem subjectAltName)" = "DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster, DNS:kubernetes.default.svc.cluster.local, IP Address:127.0.0.1, IP Address:192.168.115.4, IP Address:192.168.115.5, IP Address:192.168.115.6, IP Address:192.168.115.7, IP Address:10.254.0.1" ] ||
  fail "kubernetes SANs: $(ext_value kubernetes.pem subjectAltName)"
[ "$(ext_value server.pem subjectAltName)" = "DNS:vm1, DNS:vm2, DNS:vm3, IP Address:192.168.115.5, IP Address:192.168.115.6, IP Address:192.168.115.7" ] ||
  fail "server SANs (-hostname=\$ADDRESS): $(ext_value server.pem subjectAltName)"
[ -z "$(ext_text client.pem subjectAltName)" ] && [ -z "$(ext_text flanneld.pem subjectAltName)" ] || fail "client/flanneld have SANs"
ok

# Every issued certificate is in the ledger.
"$HWCA" ledger list --output json > "$T/ledger.json" || fail "ledger list failed"
norm() { tr 'A-F' 'a-f' | sed 's/^0*//'; }
serials=$(jq -r '.[].serial' "$T/ledger.json" | norm)
for n in ca flanneld server client kubernetes kube-proxy; do
  s=$(openssl x509 -in "$n.pem" -noout -serial | cut -d= -f2 | norm)
  grep -qx "$s" <<<"$serials" || fail "$n (serial $s) not in the ledger"
  ok
done
cd "$T"

# stdout is cfssl's JSON: same keys in the same order, same one-line shape with a final newline, and
# what cfssljson writes is exactly the JSON's values. Reference: the real cfssl, on the same inputs.
cfssl gencert -initca "$BLOG/ca-csr.json" 2>/dev/null > c-initca.json
cfssl gencert -initca "$BLOG/ca-csr.json" 2>/dev/null | cfssljson_bare cca
cfssl gencert -ca=cca.pem -ca-key=cca-key.pem -config="$BLOG/ca-config.json" "$BLOG/flanneld-csr.json" 2>/dev/null > c-gencert.json
cfssl genkey "$BLOG/flanneld-csr.json" 2>/dev/null | cfssljson_bare req
cfssl sign -ca=cca.pem -ca-key=cca-key.pem -config="$BLOG/ca-config.json" req.csr 2>/dev/null > c-sign.json
"$HWCA" gencert -initca -ca-key="$(key_uri hwca-ca second)" "$BLOG/ca-csr.json" > h-initca.json
"$HWCA" gencert -ca="$T/out/ca.pem" -ca-key="$KEY" -config="$BLOG/ca-config.json" "$BLOG/flanneld-csr.json" > h-gencert.json
"$HWCA" sign -ca="$T/out/ca.pem" -ca-key="$KEY" -config="$BLOG/ca-config.json" req.csr > h-sign.json
shape() { sed -E 's/"(-----BEGIN [A-Z ]+-----\\n)([A-Za-z0-9+\/=]{1,64}\\n)+(-----END [A-Z ]+-----\\n)"/PEM/g' "$1"; }
for kind in gencert sign; do
  [ "$(shape "c-$kind.json")" = "$(shape "h-$kind.json")" ] ||
    fail "$kind JSON shape: cfssl $(shape "c-$kind.json") vs hwca $(shape "h-$kind.json")"
  cmp -s <(tail -c1 "c-$kind.json" | od -An -c) <(tail -c1 "h-$kind.json" | od -An -c) || fail "$kind: final byte differs"
  [ "$(wc -l < "h-$kind.json")" = "$(wc -l < "c-$kind.json")" ] || fail "$kind: line count differs"
  ok
done
[ "$(shape c-gencert.json)" = '{"cert":PEM,"csr":PEM,"key":PEM}' ] || fail "cfssl's shape changed: $(shape c-gencert.json)"
[ "$(shape c-sign.json)" = '{"cert":PEM,"csr":PEM}' ] || fail "cfssl sign shape: $(shape c-sign.json)"
ok
# cfssl sign echoes the request it signed as "csr" (cfssljson -bare then rewrites NAME.csr with it).
cmp -s <(jq -j .csr c-sign.json) req.csr || fail "cfssl sign no longer echoes the CSR"
cmp -s <(jq -j .csr h-sign.json) req.csr || fail "hwca sign does not echo the CSR it signed as \"csr\": $(shape h-sign.json)"
ok
# -initca: cfssl prints the key too; hwca does not (it stays in the token). Otherwise the same shape.
[ "$(shape c-initca.json)" = '{"cert":PEM,"csr":PEM,"key":PEM}' ] || fail "cfssl initca shape: $(shape c-initca.json)"
[ "$(shape h-initca.json)" = '{"cert":PEM,"csr":PEM}' ] || fail "hwca initca shape: $(shape h-initca.json)"
ok
cfssljson -bare hj < h-gencert.json || fail "cfssljson rejects hwca's JSON"
for pair in cert:hj.pem csr:hj.csr key:hj-key.pem; do
  cmp -s <(jq -j ".${pair%%:*}" h-gencert.json) "${pair#*:}" || fail "cfssljson wrote ${pair#*:} differently from the JSON"
  ok
done
openssl pkey -in hj-key.pem -noout 2>/dev/null || fail "hj-key.pem is not a private key"
ok

# The four Go flag spellings, and -profile falling back to default with one warning.
for style in eq-single sp-single eq-double sp-double; do
  case $style in
    eq-single) args=(-ca="$T/out/ca.pem" -ca-key="$KEY" -config="$BLOG/ca-config.json" -profile=kubernetes) ;;
    sp-single) args=(-ca "$T/out/ca.pem" -ca-key "$KEY" -config "$BLOG/ca-config.json" -profile kubernetes) ;;
    eq-double) args=(--ca="$T/out/ca.pem" --ca-key="$KEY" --config="$BLOG/ca-config.json" --profile=kubernetes) ;;
    sp-double) args=(--ca "$T/out/ca.pem" --ca-key "$KEY" --config "$BLOG/ca-config.json" --profile kubernetes) ;;
  esac
  "$HWCA" gencert "${args[@]}" "$BLOG/kube-proxy-csr.json" > "$style.json" 2> "$style.err" || fail "$style: $(cat "$style.err")"
  # The CA and the profile both run 43800h from a minute-rounded start, so a leaf issued in a later
  # minute than the CA is cut to the CA's end, with its own warning; that one is expected here too.
  grep -v "^hwca: warning: the certificate's validity was cut to end with its CA's" "$style.err" > "$style.rest" || true
  [ "$(grep -c . "$style.rest")" = 1 ] && grep -q "^hwca: warning: profile 'kubernetes' is not defined" "$style.rest" ||
    fail "$style: stderr $(cat "$style.err")"
  cfssljson -bare "$style" < "$style.json" || fail "$style: cfssljson"
  verify_chain "$T/out/ca.pem" "$style.pem"
done

# --bare writes the three files itself (key 0600), the same as piping through cfssljson.
"$HWCA" gencert -ca="$T/out/ca.pem" -ca-key="$KEY" -config="$BLOG/ca-config.json" --bare own "$BLOG/flanneld-csr.json" 2>/dev/null ||
  fail "--bare failed"
[ -f own.pem ] && [ -f own.csr ] && [ "$(stat -c %a own-key.pem)" = 600 ] || fail "--bare files: $(ls -l own*)"
ok
verify_chain "$T/out/ca.pem" own.pem
same_pubkey own.pem own-key.pem

# Running the workflow again with the same token key: -initca reuses the key, the old leaves still
# verify against the new ca.pem's key (same key, same subject).
HWCA="$HWCA" bash "$BLOG/run.sh" "$KEY" "$T/again" > /dev/null 2>&1 || fail "second run.sh failed"
[ "$(openssl x509 -in "$T/again/ca.pem" -noout -pubkey)" = "$(openssl x509 -in "$T/out/ca.pem" -noout -pubkey)" ] ||
  fail "-initca did not reuse the existing token key"
ok
verify_chain "$T/again/ca.pem" "$T/out/kubernetes.pem"

finish
