#!/usr/bin/env bash
# The same CSR JSON and profile through the real cfssl (1.2.0, CA key in a file) and through hwca (CA
# key in SoftHSM2) must give certificates that agree field by field: subject DER (attribute order,
# string types, multi-valued RDNs), SANs in cfssl's order (DNS, email, IP), keyUsage and its
# criticality, extKeyUsage, basicConstraints, SKI/AKI presence (AKI = the issuer's SKI), validity
# length and signature algorithm. Table-driven: one line per case.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1
BLOG="$HWCA_SOURCE_DIR/examples/cfssl-blog"

make_token hwca-ca
ROOT=$(key_uri hwca-ca ca)
mkdir -p c h in

cp "$BLOG/ca-config.json" in/blog.json
cat > in/multi.json <<'EOF'
{"signing":{
  "default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]},
  "profiles":{
    "server":{"expiry":"8760h","usages":["signing","key encipherment","server auth"]},
    "client":{"expiry":"720h","usages":["signing","client auth"]},
    "peer":{"expiry":"87600h","usages":["signing","key encipherment","server auth","client auth"]},
    "nonrep":{"expiry":"2160h","usages":["digital signature","content committment","email protection"]},
    "codesign":{"expiry":"1h30m","usages":["digital signature","code signing","timestamping"]},
    "backdated":{"expiry":"48h","backdate":"2h","usages":["key agreement","data encipherment","ipsec user"]},
    "intermediate":{"expiry":"43800h","usages":["cert sign","crl sign"],
                    "ca_constraint":{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}}
  }}}
EOF

# The two CAs, from the blog's ca-csr.json: cfssl's (file key) and hwca's (token key).
cfssl gencert -initca "$BLOG/ca-csr.json" 2>/dev/null | cfssljson_bare c/ca
"$HWCA" gencert -initca -ca-key="$ROOT" "$BLOG/ca-csr.json" | cfssljson_bare h/ca
[ ! -e h/ca-key.pem ] || fail "hwca -initca printed a private key"
ok
diff <(cert_profile c/ca.pem) <(cert_profile h/ca.pem) >&2 || fail "the -initca CAs differ (cfssl < > hwca)"
ok
verify_chain h/ca.pem h/ca.pem

# Cases: name | mode (gencert, sign, initca) | CSR JSON (inline) or @file | config (in/NAME.json) | profile | -hostname ("-": none)
CASES=(
  "blog-flanneld|gencert|@$BLOG/flanneld-csr.json|blog|kubernetes|-"
  "blog-k8s|gencert|@$BLOG/k8s-csr.json|blog|kubernetes|-"
  "blog-kube-proxy|gencert|@$BLOG/kube-proxy-csr.json|blog|kubernetes|-"
  'blog-etcd-server|gencert|{"CN":"server","hosts":[""],"key":{"algo":"rsa","size":2048}}|blog||127.0.0.1,localhost'
  'multi-valued-O|gencert|{"CN":"admin","key":{"algo":"ecdsa","size":256},"names":[{"C":"CN","O":"k8s"},{"O":"system:masters","OU":"ops"},{"L":"FuZhou","ST":"Fujian"}]}|multi|client|-'
  'san-order|gencert|{"CN":"mixed","hosts":["b.example","10.0.0.1","ops@example.com","a.example","::1","127.0.0.1"],"key":{"algo":"rsa","size":2048}}|multi|server|-'
  'hostname-replaces|gencert|{"CN":"node","hosts":["old.example","192.0.2.9"],"key":{"algo":"rsa","size":2048}}|multi|server|10.0.0.1,node1'
  'unknown-profile-falls-back|gencert|{"CN":"fallback","hosts":["fb.example"],"key":{"algo":"ecdsa","size":256}}|multi|no-such-profile|-'
  'content-committment|gencert|{"CN":"signer","hosts":["signer@example.com"],"key":{"algo":"ecdsa","size":256}}|multi|nonrep|-'
  'codesign-90min-p384|gencert|{"CN":"builder","key":{"algo":"ecdsa","size":384},"names":[{"O":"Example","OU":"Release"}]}|multi|codesign|-'
  'backdate|gencert|{"CN":"vpn","key":{"algo":"rsa","size":2048}}|multi|backdated|-'
  'ca-constraint-intermediate|gencert|{"CN":"Sub CA","key":{"algo":"ecdsa","size":256},"names":[{"C":"US","O":"Example"}]}|multi|intermediate|-'
  'utf8-and-wildcard|gencert|{"CN":"*.example.com","hosts":["*.example.com","example.com"],"key":{"algo":"ecdsa","size":256},"names":[{"O":"Ünïcode 证书","L":"a&b"}]}|multi|peer|-'
  'lowercase-cn-and-serialnumber|gencert|{"cn":"lower","serialnumber":"SN-0042","key":{"algo":"rsa","size":2048},"names":[{"C":"DE"}]}|multi|client|-'
  'default-key-ecdsa|gencert|{"CN":"nokey","hosts":["nokey.example"]}|multi|server|-'
  "sign-blog-k8s|sign|@$BLOG/k8s-csr.json|blog|kubernetes|-"
  'sign-hostname|sign|{"CN":"etcd-peer","hosts":["ignored.example"],"key":{"algo":"ecdsa","size":256}}|multi|peer|127.0.0.1,localhost'
  'sign-multi-O|sign|{"CN":"ops","key":{"algo":"rsa","size":2048},"names":[{"O":"a"},{"O":"b"},{"O":"c","C":"FR"}]}|blog|kubernetes|-'
  'initca-ecdsa384-expiry-pathlen|initca|{"CN":"Root P384","key":{"algo":"ecdsa","size":384},"names":[{"C":"US","O":"Example"}],"ca":{"expiry":"87600h","pathlen":1}}|||-'
  'initca-pathlenzero|initca|{"CN":"Root Zero","key":{"algo":"ecdsa","size":256},"ca":{"pathlenzero":true,"expiry":"8760h"}}|||-'
  'initca-rsa3072-names|initca|{"CN":"Root 3072","key":{"algo":"rsa","size":3072},"names":[{"C":"CN","ST":"FuZhou","L":"FuZhou","O":"k8s","OU":"System"}]}|||-'
)

n=0
for line in "${CASES[@]}"; do
  n=$((n + 1))
  IFS='|' read -r name mode csr cfg profile hostname <<<"$line"
  if [[ "$csr" == @* ]]; then cp "${csr#@}" "in/$n.csr.json"; else printf '%s\n' "$csr" > "in/$n.csr.json"; fi
  flags=()
  [ -z "$cfg" ] || flags+=(-config "in/$cfg.json")
  [ -z "$profile" ] || flags+=(-profile "$profile")
  [ "$hostname" = "-" ] || flags+=(-hostname "$hostname")
  case "$mode" in
    gencert)
      cfssl gencert -ca c/ca.pem -ca-key c/ca-key.pem "${flags[@]}" "in/$n.csr.json" 2>/dev/null | cfssljson_bare "c/$n"
      "$HWCA" gencert -ca h/ca.pem -ca-key "$ROOT" "${flags[@]}" "in/$n.csr.json" 2>"$T/err" | cfssljson_bare "h/$n" ||
        fail "$name: hwca gencert failed: $(cat "$T/err")"
      same_pubkey "h/$n.pem" "h/$n-key.pem"
      ;;
    sign)
      cfssl genkey "in/$n.csr.json" 2>/dev/null | cfssljson_bare "in/$n"
      cfssl sign -ca c/ca.pem -ca-key c/ca-key.pem "${flags[@]}" "in/$n.csr" 2>/dev/null | cfssljson_bare "c/$n"
      "$HWCA" sign -ca h/ca.pem -ca-key "$ROOT" "${flags[@]}" "in/$n.csr" 2>"$T/err" | cfssljson_bare "h/$n" ||
        fail "$name: hwca sign failed: $(cat "$T/err")"
      same_pubkey "h/$n.pem" "in/$n-key.pem"
      ;;
    initca)
      cfssl gencert -initca "in/$n.csr.json" 2>/dev/null | cfssljson_bare "c/$n"
      "$HWCA" gencert -initca -ca-key "$(key_uri hwca-ca "root-$n")" "in/$n.csr.json" 2>"$T/err" | cfssljson_bare "h/$n" ||
        fail "$name: hwca gencert -initca failed: $(cat "$T/err")"
      [ ! -e "h/$n-key.pem" ] || fail "$name: hwca -initca printed a private key"
      ok
      ;;
  esac
  diff <(cert_profile "c/$n.pem" | grep -v '^validity') <(cert_profile "h/$n.pem" | grep -v '^validity') >&2 ||
    fail "$name: cfssl (<) and hwca (>) certificates differ"
  ok
  # Same validity length, except that hwca ends a leaf at its CA's notAfter where cfssl runs past it.
  if [ "$mode" = initca ]; then
    [ "$(validity_seconds "h/$n.pem")" = "$(validity_seconds "c/$n.pem")" ] || fail "$name: validity differs"
    ok
  else
    leaf_validity_ok "h/$n.pem" h/ca.pem "$(validity_seconds "c/$n.pem")"
  fi
  if [ "$mode" = initca ]; then
    verify_chain "h/$n.pem" "h/$n.pem"
    [ -z "$(aki "h/$n.pem")" ] || fail "$name: -initca root has an AKI"
    ok
  else
    [ "$(aki "h/$n.pem")" = "$(ski h/ca.pem)" ] || fail "$name: hwca AKI $(aki "h/$n.pem") is not the CA's SKI $(ski h/ca.pem)"
    [ "$(aki "c/$n.pem")" = "$(ski c/ca.pem)" ] || fail "$name: cfssl AKI is not its CA's SKI"
    [ "$(issuer_asn1 "h/$n.pem")" = "$(subject_asn1 h/ca.pem)" ] || fail "$name: hwca issuer is not the CA subject, byte for byte"
    ok
    verify_chain h/ca.pem "h/$n.pem"
    verify_fails c/ca.pem "h/$n.pem"
  fi
  echo "ok: $name"
done

# Spot checks that the table above really looked at what matters (a diff of two empty lists agrees too).
grep -q 'O=system:masters+O=k8s' <(cert_profile h/5.pem) || fail "multi-valued O missing: $(cert_profile h/5.pem)"
ok
[ "$(ext_value h/6.pem subjectAltName)" = \
  "DNS:b.example, DNS:a.example, email:ops@example.com, IP Address:10.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:127.0.0.1" ] ||
  fail "SAN order: $(ext_value h/6.pem subjectAltName)"
ok
[ "$(ext_value h/7.pem subjectAltName)" = "DNS:node1, IP Address:10.0.0.1" ] || fail "-hostname: $(ext_value h/7.pem subjectAltName)"
ok
ext_text h/9.pem keyUsage | grep -q 'Non Repudiation' || fail "content committment did not give Non Repudiation"
ok
[ "$(validity_seconds h/10.pem)" = 5400 ] || fail "1h30m profile: $(validity_seconds h/10.pem) s"
ok
# Intentional difference: a 10-year profile under a 5-year CA. cfssl issues past its CA's end; hwca stops there.
[ "$(validity_seconds c/13.pem)" = $((87600 * 3600)) ] && [ "$(not_after c/13.pem)" -gt "$(not_after c/ca.pem)" ] ||
  fail "cfssl changed: its 87600h leaf no longer outlives the CA"
[ "$(not_after h/13.pem)" = "$(not_after h/ca.pem)" ] || fail "hwca issued past its CA's notAfter"
ok
[ "$(ext_value h/12.pem basicConstraints)" = "CA:TRUE, pathlen:0" ] || fail "ca_constraint: $(ext_value h/12.pem basicConstraints)"
ok
subject_asn1 h/13.pem | grep -q 'UTF8STRING' || fail "no UTF8String in the UTF-8 subject"
ok
[ "$(ext_value h/19.pem basicConstraints)" = "CA:TRUE, pathlen:1" ] || fail "ca.pathlen: $(ext_value h/19.pem basicConstraints)"
ok
[ "$(validity_seconds h/19.pem)" = $((87600 * 3600)) ] || fail "ca.expiry 87600h: $(validity_seconds h/19.pem)"
ok
[ "$(sig_alg h/19.pem)" = ecdsa-with-SHA384 ] && [ "$(sig_alg h/21.pem)" = sha384WithRSAEncryption ] ||
  fail "signature algorithms: $(sig_alg h/19.pem), $(sig_alg h/21.pem)"
ok

# The one intentional difference in this area: cfssl 1.2.0 turns the blog's "hosts":[""] (no -hostname)
# into an empty dNSName SAN ("DNS:"), which RFC 5280 forbids; hwca drops empty hosts (no SAN at all).
printf '%s\n' '{"CN":"client","hosts":[""],"key":{"algo":"rsa","size":2048}}' > in/empty-host.json
cfssl gencert -ca c/ca.pem -ca-key c/ca-key.pem -config in/blog.json -hostname "" in/empty-host.json 2>/dev/null | cfssljson_bare c/empty-host
"$HWCA" gencert -ca h/ca.pem -ca-key "$ROOT" -config in/blog.json -hostname "" in/empty-host.json | cfssljson_bare h/empty-host
[ "$(ext_value c/empty-host.pem subjectAltName)" = "DNS:" ] || fail "cfssl changed: $(ext_value c/empty-host.pem subjectAltName)"
[ -z "$(ext_text h/empty-host.pem subjectAltName)" ] || fail "hwca wrote a SAN for hosts [\"\"]: $(ext_text h/empty-host.pem subjectAltName)"
ok
diff <(cert_profile c/empty-host.pem | grep -Ev '^(san|validity)') <(cert_profile h/empty-host.pem | grep -Ev '^(san|validity)') >&2 ||
  fail "empty-host: certificates differ beyond the SAN"
ok
leaf_validity_ok h/empty-host.pem h/ca.pem "$(validity_seconds c/empty-host.pem)"

finish
