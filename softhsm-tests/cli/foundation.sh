#!/usr/bin/env bash
# The foundation end to end, against real SoftHSM2: for every CA algorithm, a root key generated in
# the token (attributes read back by hwca and by pkcs11-tool), a self-signed root, a leaf signed
# from an openssl CSR through the token, verified by openssl and certtool, and the ledger.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"

make_token hwca-root

declare -A digest=([ecdsa-p256]=ecdsa-with-SHA256 [ecdsa-p384]=ecdsa-with-SHA384
                   [rsa-2048]=sha256WithRSAEncryption [rsa-3072]=sha384WithRSAEncryption
                   [rsa-4096]=sha512WithRSAEncryption)
serials=()

for algo in ecdsa-p256 ecdsa-p384 rsa-2048 rsa-3072 rsa-4096; do
  uri=$(key_uri hwca-root "root-$algo")
  "$HWCA" key generate --key "$uri" --algo "$algo" > gen.txt
  grep -q "algorithm:  $algo" gen.txt || fail "$algo: key generate did not report the algorithm"; ok

  "$HWCA" key show --key "$uri" --output json > show.json
  for attr in local sensitive always-sensitive never-extractable; do
    [ "$(jq -r ".attributes[\"$attr\"]" show.json)" = true ] || fail "$algo: $attr is not true"; ok
  done
  [ "$(jq -r '.attributes.extractable' show.json)" = false ] || fail "$algo: key is extractable"; ok
  [ "$(jq -r '.attributes["key-value-readable"]' show.json)" = false ] || fail "$algo: CKA_VALUE readable"; ok
  [ "$(jq -r .algorithm show.json)" = "$algo" ] || fail "$algo: algorithm in json"; ok
  # The token's own view agrees.
  pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-root --login --pin "$(cat "$T/hwca-root.pin")" \
    --list-objects --type privkey 2>/dev/null \
    | grep -A8 "label: *root-$algo\$" > p11.txt
  grep -q 'Access: *sensitive, always sensitive, never extractable, local' p11.txt \
    || fail "$algo: pkcs11-tool disagrees: $(cat p11.txt)"; ok

  # The root.
  "$HWCA" ca init --key "$uri" --subject "/CN=Test Root $algo/O=hwca tests" --validity 87600h --out "ca-$algo.pem" >/dev/null
  openssl x509 -in "ca-$algo.pem" -noout -text > ca.txt
  grep -A1 'X509v3 Basic Constraints: critical' ca.txt | grep -q 'CA:TRUE' || fail "$algo: root BC"; ok
  grep -A1 'X509v3 Key Usage: critical' ca.txt | grep -q 'Digital Signature, Certificate Sign, CRL Sign' || fail "$algo: root KU"; ok
  ski=$(grep -A1 'Subject Key Identifier' ca.txt | tail -1 | tr -d ' ')
  aki=$(grep -A1 'Authority Key Identifier' ca.txt | tail -1 | tr -d ' ' | sed 's/^keyid://')
  [ -n "$ski" ] && [ "$ski" = "$aki" ] || fail "$algo: root SKI/AKI ($ski / $aki)"; ok
  grep -q "Signature Algorithm: ${digest[$algo]}" ca.txt || fail "$algo: root signature is not ${digest[$algo]}"; ok
  openssl verify -CAfile "ca-$algo.pem" "ca-$algo.pem" >/dev/null || fail "$algo: root does not self-verify"; ok
  serial=$(openssl x509 -in "ca-$algo.pem" -noout -serial | cut -d= -f2)
  [ "${#serial}" -ge 16 ] || fail "$algo: serial $serial shorter than 64 bits"; ok
  nb=$(date -d "$(openssl x509 -in "ca-$algo.pem" -noout -startdate | cut -d= -f2)" +%s)
  na=$(date -d "$(openssl x509 -in "ca-$algo.pem" -noout -enddate | cut -d= -f2)" +%s)
  now=$(date +%s)
  [ $((now - nb)) -ge 240 ] && [ $((now - nb)) -le 420 ] || fail "$algo: notBefore is not backdated ~5 minutes"; ok
  [ $((na - nb)) -eq $((87600 * 3600)) ] || fail "$algo: validity is not 87600h"; ok
  serials+=("$(echo "$serial" | tr 'A-F' 'a-f')")

  # A leaf from an openssl CSR, through the token.
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf-key.pem -out leaf.csr \
    -subj "/CN=leaf.$algo.test" -addext "subjectAltName=DNS:leaf.$algo.test,IP:127.0.0.1" 2>/dev/null
  "$HWCA" sign --ca "ca-$algo.pem" --ca-key "$uri" --csr leaf.csr --profile server --bare "leaf-$algo"
  [ -f "leaf-$algo.pem" ] || fail "$algo: sign --bare wrote no leaf-$algo.pem"; ok
  openssl verify -CAfile "ca-$algo.pem" "leaf-$algo.pem" >/dev/null || fail "$algo: openssl verify"; ok
  certtool --verify --load-ca-certificate "ca-$algo.pem" --infile "leaf-$algo.pem" >/dev/null || fail "$algo: certtool --verify"; ok
  certtool --verify-chain --infile <(cat "leaf-$algo.pem" "ca-$algo.pem") >/dev/null || fail "$algo: certtool --verify-chain"; ok
  openssl x509 -in "leaf-$algo.pem" -noout -text > leaf.txt
  grep -A1 'Extended Key Usage' leaf.txt | grep -q 'TLS Web Server Authentication' || fail "$algo: leaf EKU"; ok
  grep -A1 'X509v3 Key Usage: critical' leaf.txt | tail -1 | grep -qx ' *Digital Signature' || fail "$algo: EC leaf KU must be digitalSignature only"; ok
  grep -A1 'Basic Constraints: critical' leaf.txt | grep -q 'CA:FALSE' || fail "$algo: leaf BC"; ok
  grep -A1 'Subject Alternative Name' leaf.txt | grep -q 'DNS:leaf.'"$algo"'.test, IP Address:127.0.0.1' || fail "$algo: leaf SANs"; ok
  laki=$(grep -A1 'Authority Key Identifier' leaf.txt | tail -1 | tr -d ' ' | sed 's/^keyid://')
  [ "$laki" = "$ski" ] || fail "$algo: leaf AKI is not the root's SKI"; ok
  serials+=("$(openssl x509 -in "leaf-$algo.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')")
done

# An RSA leaf key gets keyEncipherment too; client and peer profiles.
openssl req -new -newkey rsa:2048 -nodes -keyout rsa-key.pem -out rsa.csr -subj "/CN=rsa-client" 2>/dev/null
uri=$(key_uri hwca-root root-ecdsa-p256)
"$HWCA" sign --ca ca-ecdsa-p256.pem --ca-key "$uri" --csr rsa.csr --profile client --bare rsa-client
openssl x509 -in rsa-client.pem -noout -text > rsa.txt
grep -A1 'X509v3 Key Usage: critical' rsa.txt | grep -q 'Digital Signature, Key Encipherment' || fail "RSA leaf KU"; ok
grep -A1 'Extended Key Usage' rsa.txt | tail -1 | grep -qx ' *TLS Web Client Authentication' || fail "client EKU"; ok
"$HWCA" sign --ca ca-ecdsa-p256.pem --ca-key "$uri" --csr rsa.csr --profile peer --bare rsa-peer
openssl x509 -in rsa-peer.pem -noout -text | grep -A1 'Extended Key Usage' | grep -q 'TLS Web Server Authentication, TLS Web Client Authentication' || fail "peer EKU"; ok
serials+=("$(openssl x509 -in rsa-client.pem -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')")
serials+=("$(openssl x509 -in rsa-peer.pem -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')")

# Go's four spellings of an option, and a replaced output file.
for form in "-ca=ca-ecdsa-p256.pem" "-ca ca-ecdsa-p256.pem" "--ca=ca-ecdsa-p256.pem" "--ca ca-ecdsa-p256.pem"; do
  # shellcheck disable=SC2086
  "$HWCA" sign $form -ca-key "$uri" -csr rsa.csr -profile client -bare spelled
  openssl verify -CAfile ca-ecdsa-p256.pem spelled.pem >/dev/null || fail "spelling '$form'"; ok
  serials+=("$(openssl x509 -in spelled.pem -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')")
done
want=$(printf "%o" $((0664 & ~$(umask))))
[ "$(stat -c %a spelled.pem)" = "$want" ] || fail "NAME.pem mode is $(stat -c %a spelled.pem), cfssljson writes 0664 less the umask ($want)"; ok

# The ledger: every serial exactly once, in text and JSON.
"$HWCA" ledger list > ledger.txt
"$HWCA" ledger list --output json > ledger.json
[ "$(jq length ledger.json)" -eq "${#serials[@]}" ] || fail "ledger has $(jq length ledger.json) rows, issued ${#serials[@]}"; ok
[ "$(wc -l < ledger.txt)" -eq "${#serials[@]}" ] || fail "ledger list text rows"; ok
for s in "${serials[@]}"; do
  [ "$(jq --arg s "$s" '[.[] | select(.serial == $s)] | length' ledger.json)" -eq 1 ] || fail "serial $s not in the ledger exactly once"; ok
  grep -q "^$s " ledger.txt || fail "serial $s not in ledger list"; ok
done
[ "$(jq -r '.[0].profile' ledger.json)" = root-ca ] || fail "first ledger row is not the root"; ok

finish
