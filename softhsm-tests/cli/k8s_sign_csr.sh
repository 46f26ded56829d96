#!/usr/bin/env bash
# hwca k8s sign-csr end to end, with the kubernetes-ca key in a real SoftHSM2 token: CertificateSigningRequest
# objects built from `openssl req` output, in YAML and in JSON as kubectl prints them; accepted ones come
# back with status.certificate that `openssl verify`s against pki/ca.crt with the exact subject, SANs
# and usages (and are in the ledger); refusals come back with a Failed condition; what
# kube-controller-manager ignores comes back unchanged; malformed objects give one error line.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"

make_token k8s
ca_uri=$(key_uri k8s kubernetes-ca)
"$HWCA" key generate --key "$ca_uri" --algo ecdsa-p256 >/dev/null
# The kubeadm layout by hand: OUT/pki/ca.crt (what `hwca k8s init --out OUT` writes).
mkdir -p out/pki
"$HWCA" ca init --key "$ca_uri" --subject "/CN=kubernetes" --out out/pki/ca.crt >/dev/null
cat > cluster.yaml <<EOF
name: kubernetes
controlPlane:
  - {name: cp1, ip: 127.0.0.1}
workers:
  - {name: w1, ip: 127.0.0.2}
  - {name: w2, ip: 127.0.0.3}
cas:
  kubernetes-ca:
    key: "$ca_uri"
  etcd-ca:
    key: "$(key_uri k8s etcd-ca)"
  front-proxy-ca:
    key: "$(key_uri k8s front-proxy-ca)"
EOF
sign() { "$HWCA" k8s sign-csr --config cluster.yaml --pki out "$@"; }
ledger_rows() { "$HWCA" ledger list --output json | jq length; }

# newcsr NAME ALGO SUBJECT [SAN]: NAME.csr (PEM) from openssl req.
newcsr() {
  local name=$1 algo=$2 subj=$3 san=${4:-}
  local keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [ "$algo" = rsa ] && keyopt=(-newkey rsa:2048)
  local ext=()
  [ -n "$san" ] && ext=(-addext "subjectAltName=$san")
  openssl req -new "${keyopt[@]}" -nodes -keyout "$name.key" -subj "$subj" "${ext[@]}" -out "$name.csr" 2>/dev/null
}

# object FORMAT CSRFILE SIGNER USAGES USERNAME GROUPS APPROVED [EXPIRATION]: a CertificateSigningRequest
# as `kubectl get csr -o yaml|json` prints it (USAGES and GROUPS comma-separated).
object() {
  local fmt=$1 csr=$2 signer=$3 usages=$4 user=$5 groups=$6 approved=$7 exp=${8:-}
  local req
  req=$(base64 -w0 "$csr")
  local j
  j=$(jq -n --arg req "$req" --arg signer "$signer" --arg usages "$usages" --arg user "$user" --arg groups "$groups" \
        --arg approved "$approved" --arg exp "$exp" '{
    apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
    metadata: {creationTimestamp: "2024-05-01T10:00:00Z", generateName: "csr-", name: "csr-x1",
               resourceVersion: "4711", uid: "3f0c2d1e-0000-4000-8000-000000000001"},
    spec: ((if $exp == "" then {} else {expirationSeconds: ($exp | tonumber)} end) + {
      groups: ($groups | split(",")), request: $req, signerName: $signer,
      usages: ($usages | split(",")), username: $user}),
    status: (if $approved == "1" then {conditions: [{lastTransitionTime: "2024-05-01T10:00:05Z",
      lastUpdateTime: "2024-05-01T10:00:05Z", message: "This CSR was approved by kubectl certificate approve.",
      reason: "KubectlApprove", status: "True", type: "Approved"}]} else {} end)}')
  if [ "$fmt" = json ]; then printf '%s\n' "$j" | jq --indent 4 .; return; fi
  # YAML, laid out as kubectl does.
  printf 'apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n'
  printf '  creationTimestamp: "2024-05-01T10:00:00Z"\n  generateName: csr-\n  name: csr-x1\n'
  printf '  resourceVersion: "4711"\n  uid: 3f0c2d1e-0000-4000-8000-000000000001\nspec:\n'
  [ -n "$exp" ] && printf '  expirationSeconds: %s\n' "$exp"
  printf '  groups:\n'
  local IFS=,
  for g in $groups; do printf '  - %s\n' "$g"; done
  printf '  request: %s\n  signerName: %s\n  usages:\n' "$req" "$signer"
  for u in $usages; do printf '  - %s\n' "$u"; done
  printf '  username: %s\n' "$user"
  if [ "$approved" = 1 ]; then
    printf 'status:\n  conditions:\n  - lastTransitionTime: "2024-05-01T10:00:05Z"\n'
    printf '    lastUpdateTime: "2024-05-01T10:00:05Z"\n    message: This CSR was approved by kubectl certificate approve.\n'
    printf '    reason: KubectlApprove\n    status: "True"\n    type: Approved\n'
  else
    printf 'status: {}\n'
  fi
}

# certificate_of FILE: status.certificate decoded (YAML or JSON output).
certificate_of() {
  if [ "$(head -c1 "$1")" = "{" ]; then jq -r '.status.certificate // empty' "$1" | base64 -d
  else sed -n 's/^  certificate: //p' "$1" | base64 -d; fi
}

# accepted DESC OUTFILE SUBJECT SAN_LINE KU EKU: checks an issued certificate.
accepted() {
  local desc=$1 out=$2 subject=$3 san=$4 ku=$5 eku=$6
  certificate_of "$out" > "$out.crt"
  [ -s "$out.crt" ] || fail "$desc: no status.certificate"; ok
  openssl verify -CAfile out/pki/ca.crt "$out.crt" >/dev/null || fail "$desc: openssl verify"; ok
  [ "$(openssl x509 -in "$out.crt" -noout -subject -nameopt RFC2253)" = "subject=$subject" ] \
    || fail "$desc: subject $(openssl x509 -in "$out.crt" -noout -subject -nameopt RFC2253)"; ok
  openssl x509 -in "$out.crt" -noout -text > "$out.txt"
  if [ -n "$san" ]; then
    grep -A1 'X509v3 Subject Alternative Name' "$out.txt" | tail -1 | grep -qx "  *$san" \
      || fail "$desc: SANs $(grep -A1 'Subject Alternative Name' "$out.txt" | tail -1)"; ok
  else
    ! grep -q 'Subject Alternative Name' "$out.txt" || fail "$desc: unexpected SANs"; ok
  fi
  grep -A1 'X509v3 Key Usage: critical' "$out.txt" | tail -1 | grep -qx "  *$ku" \
    || fail "$desc: key usage $(grep -A1 'X509v3 Key Usage' "$out.txt" | tail -1)"; ok
  grep -A1 'X509v3 Extended Key Usage' "$out.txt" | tail -1 | grep -qx "  *$eku" \
    || fail "$desc: extended key usage $(grep -A1 'Extended Key Usage' "$out.txt" | tail -1)"; ok
  grep -A1 'X509v3 Basic Constraints: critical' "$out.txt" | grep -q 'CA:FALSE' || fail "$desc: not CA:FALSE"; ok
  local serial
  serial=$(openssl x509 -in "$out.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
  [ "$("$HWCA" ledger list --output json | jq --arg s "$serial" '[.[] | select(.serial == $s)] | length')" -eq 1 ] \
    || fail "$desc: serial $serial not in the ledger"; ok
}

validity_seconds() {
  local nb na
  nb=$(date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s)
  na=$(date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s)
  echo $((na - nb))
}

# --- accepted -------------------------------------------------------------------------------------
# kubelet-serving, YAML, already approved: the CSR also asks for CA:TRUE and a keyUsage (dropped).
newcsr w1-serving ec "/O=system:nodes/CN=system:node:w1" "DNS:w1,IP:127.0.0.2"
openssl req -new -key w1-serving.key -subj "/O=system:nodes/CN=system:node:w1" \
  -addext "subjectAltName=DNS:w1,IP:127.0.0.2" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" -out w1-serving.csr 2>/dev/null
object yaml w1-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 \
  system:nodes,system:authenticated 1 > w1-serving.yaml
sign --in w1-serving.yaml > w1-serving.out 2> err.txt || fail "serving: exit $?"
[ ! -s err.txt ] || fail "serving: stderr: $(cat err.txt)"; ok
accepted serving w1-serving.out "CN=system:node:w1,O=system:nodes" "DNS:w1, IP Address:127.0.0.2" \
  "Digital Signature" "TLS Web Server Authentication"
[ "$(validity_seconds w1-serving.out.crt)" -eq $((8760 * 3600)) ] || fail "serving: validity is not 8760h"; ok
# The object comes back whole: the approval kept, strings still quoted, the request untouched.
grep -q '^  resourceVersion: "4711"$' w1-serving.out || fail "serving: resourceVersion"; ok
grep -q 'reason: KubectlApprove$' w1-serving.out || fail "serving: approval lost"; ok
grep -q "^  request: $(base64 -w0 w1-serving.csr)\$" w1-serving.out || fail "serving: request changed"; ok

# kubelet client, JSON, RSA key, with expirationSeconds 3600 (short: notAfter = now + 1h).
newcsr w2-client rsa "/O=system:nodes/CN=system:node:w2"
object json w2-client.csr kubernetes.io/kube-apiserver-client-kubelet "digital signature,key encipherment,client auth" \
  system:node:w2 system:nodes,system:authenticated 1 3600 > w2-client.json
sign --in w2-client.json > w2-client.out || fail "kubelet client: exit $?"
jq -e . w2-client.out >/dev/null || fail "kubelet client: output is not JSON"; ok
[ "$(jq -r '.spec.expirationSeconds | type' w2-client.out)" = number ] || fail "kubelet client: expirationSeconds type"; ok
[ "$(jq -r '.metadata.resourceVersion | type' w2-client.out)" = string ] || fail "kubelet client: resourceVersion type"; ok
[ "$(jq -r '.status.conditions | length' w2-client.out)" -eq 1 ] || fail "kubelet client: conditions"; ok
accepted "kubelet client" w2-client.out "CN=system:node:w2,O=system:nodes" "" \
  "Digital Signature, Key Encipherment" "TLS Web Client Authentication"
[ "$(validity_seconds w2-client.out.crt)" -eq 3900 ] || fail "kubelet client: validity $(validity_seconds w2-client.out.crt), want 3900 (5 min backdate + 1h)"; ok

# kube-apiserver-client, from stdin, any subject and SANs.
newcsr jane ec "/O=developers/CN=jane" "email:jane@example.com"
object yaml jane.csr kubernetes.io/kube-apiserver-client "client auth" admin system:masters 1 > jane.yaml
sign < jane.yaml > jane.out || fail "apiserver client: exit $?"
# (only client auth asked: no keyUsage bit, so no keyUsage extension, as Go's x509 leaves it out)
certificate_of jane.out > jane.crt
openssl verify -CAfile out/pki/ca.crt jane.crt >/dev/null || fail "apiserver client: verify"; ok
[ "$(openssl x509 -in jane.crt -noout -subject -nameopt RFC2253)" = "subject=CN=jane,O=developers" ] || fail "apiserver client: subject"; ok
openssl x509 -in jane.crt -noout -text > jane.txt
grep -A1 'Extended Key Usage' jane.txt | tail -1 | grep -qx ' *TLS Web Client Authentication' || fail "apiserver client: EKU"; ok
grep -A1 'Subject Alternative Name' jane.txt | tail -1 | grep -qx ' *email:jane@example.com' || fail "apiserver client: SAN"; ok
! grep -q 'X509v3 Key Usage' jane.txt || fail "apiserver client: a keyUsage extension without usages"; ok
[ "$("$HWCA" ledger list --output json | jq -r '.[-1].requester')" = "k8s:admin" ] || fail "apiserver client: ledger requester"; ok

# --approve: an unapproved serving CSR for w2's own name and IP; a new node's client CSR from a bootstrap token.
newcsr w2-serving ec "/O=system:nodes/CN=system:node:w2" "DNS:w2,IP:127.0.0.3"
object json w2-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w2 \
  system:nodes,system:authenticated 0 > w2-serving.json
sign --approve --in w2-serving.json > w2-serving.out || fail "approve serving: exit $?"
[ "$(jq -r '.status.conditions[0].type + "/" + .status.conditions[0].status + "/" + .status.conditions[0].reason' w2-serving.out)" \
  = "Approved/True/AutoApproved" ] || fail "approve serving: no Approved condition"; ok
accepted "approve serving" w2-serving.out "CN=system:node:w2,O=system:nodes" "DNS:w2, IP Address:127.0.0.3" \
  "Digital Signature" "TLS Web Server Authentication"
newcsr w3-client ec "/O=system:nodes/CN=system:node:w3"
object yaml w3-client.csr kubernetes.io/kube-apiserver-client-kubelet "digital signature,client auth" \
  system:bootstrap:abcdef system:bootstrappers,system:authenticated 0 > w3-client.yaml
sign --approve --in w3-client.yaml > w3-client.out || fail "approve bootstrap: exit $?"
grep -q 'reason: AutoApproved' w3-client.out || fail "approve bootstrap: no Approved condition"; ok
accepted "approve bootstrap" w3-client.out "CN=system:node:w3,O=system:nodes" "" "Digital Signature" "TLS Web Client Authentication"
[ "$("$HWCA" ledger list --output json | jq -r '.[-1].requester')" = "k8s:system:bootstrap:abcdef" ] \
  || fail "ledger requester is not k8s:<username>"; ok
issued=$(ledger_rows)

# --- refusals: condition Failed, exit 0, one warning, nothing issued --------------------------------
refused() {
  local desc=$1 file=$2 message=$3
  local rc=0
  sign --in "$file" > refused.out 2> err.txt || rc=$?
  [ "$rc" -eq 0 ] || fail "$desc: exit $rc ($(cat err.txt))"; ok
  [ "$(grep -c . err.txt)" -eq 1 ] && grep -q '^hwca: warning: ' err.txt || fail "$desc: expected one warning, got: $(cat err.txt)"; ok
  if [ "$(head -c1 "$file")" = "{" ]; then
    [ "$(jq -r '.status.conditions[-1] | .type + "/" + .status + "/" + .reason' refused.out)" = "Failed/True/SignerValidationFailure" ] \
      || fail "$desc: no Failed condition"; ok
    jq -r '.status.conditions[-1].message' refused.out | grep -qF -- "$message" || fail "$desc: message: $(jq -r '.status.conditions[-1].message' refused.out)"; ok
    [ "$(jq -r '.status.certificate // "none"' refused.out)" = none ] || fail "$desc: a certificate was set"; ok
  else
    grep -q 'type: Failed' refused.out && grep -q 'reason: SignerValidationFailure' refused.out || fail "$desc: no Failed condition"; ok
    grep -F -- "$message" refused.out >/dev/null || fail "$desc: message missing from $(cat refused.out)"; ok
    ! grep -q '^  certificate:' refused.out || fail "$desc: a certificate was set"; ok
  fi
  [ "$(ledger_rows)" -eq "$issued" ] || fail "$desc: something was issued"; ok
}
newcsr bad-o ec "/O=system:masters/CN=system:node:w1" "DNS:w1"
object yaml bad-o.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 system:nodes 1 > bad-o.yaml
refused "wrong O" bad-o.yaml "subject organization is not system:nodes"
newcsr bad-cn ec "/O=system:nodes/CN=w1"
object json bad-cn.csr kubernetes.io/kube-apiserver-client-kubelet "digital signature,client auth" system:node:w1 system:nodes 1 > bad-cn.json
refused "CN without system:node:" bad-cn.json "subject common name does not begin with system:node:"
newcsr client-san ec "/O=system:nodes/CN=system:node:w1" "IP:127.0.0.2"
object yaml client-san.csr kubernetes.io/kube-apiserver-client-kubelet "digital signature,client auth" system:node:w1 system:nodes 1 > client-san.yaml
refused "a SAN on a kubelet client CSR" client-san.yaml "IP subjectAltNames are not allowed"
newcsr serving-email ec "/O=system:nodes/CN=system:node:w1" "DNS:w1,email:w1@example.com"
object json serving-email.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 system:nodes 1 > serving-email.json
refused "an email SAN on a serving CSR" serving-email.json "Email subjectAltNames are not allowed"
object yaml w1-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth,client auth" system:node:w1 system:nodes 1 > usage.yaml
refused "a usage outside the set" usage.yaml "usages did not match [digital signature key encipherment server auth]"
object json jane.csr kubernetes.io/kube-apiserver-client "client auth,server auth" admin system:masters 1 > usage2.json
refused "server auth on an apiserver client CSR" usage2.json "invalid usage for client certificate: server auth"
object yaml w1-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 system:nodes 1 599 > exp599.yaml
refused "expirationSeconds 599" exp599.yaml "may not specify a duration less than 600 seconds"

# --- left unchanged, with one warning ---------------------------------------------------------------
unchanged() {
  local desc=$1 file=$2 message=$3; shift 3
  local rc=0
  sign "$@" --in "$file" > same.out 2> err.txt || rc=$?
  [ "$rc" -eq 0 ] || fail "$desc: exit $rc ($(cat err.txt))"; ok
  [ "$(grep -c . err.txt)" -eq 1 ] && grep -q "^hwca: warning: .*$message" err.txt || fail "$desc: stderr: $(cat err.txt)"; ok
  jq -S . "$file" > a.json && jq -S . same.out > b.json && cmp -s a.json b.json || fail "$desc: the object changed"; ok
  [ "$(ledger_rows)" -eq "$issued" ] || fail "$desc: something was issued"; ok
}
object json w2-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w2 system:nodes 0 > pending.json
unchanged "not approved" pending.json "is not approved"
object json w1-serving.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 system:nodes 1 > w1ok.json
jq '.spec.signerName = "example.com/my-signer"' w1ok.json > other-signer.json
unchanged "unknown signerName" other-signer.json "example.com/my-signer"
# --approve declines: w1 asking for w2's IP.
newcsr w1-foreign ec "/O=system:nodes/CN=system:node:w1" "DNS:w1,IP:127.0.0.3"
object json w1-foreign.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 \
  system:nodes,system:authenticated 0 > foreign.json
unchanged "--approve declines a foreign IP" foreign.json "127.0.0.3 does not belong to node w1" --approve
jq '.status.certificate = "'"$(base64 -w0 w1-serving.out.crt)"'"' w1ok.json > done.json
unchanged "already issued" done.json "already has a certificate"

# --- malformed: one error line, nothing on stdout, nothing issued -----------------------------------
printf 'this: is: not: yaml: [\n' > garbage.yaml
expect_error "not YAML" sign --in garbage.yaml
jq -n '{apiVersion: "v1", kind: "List", items: []}' > list.json
expect_error "a List" sign --in list.json
jq '.spec.request = "not base64 $$$"' w1ok.json > b64.json
expect_error "request not base64" sign --in b64.json
jq --arg r "$(base64 -w0 w1-serving.out.crt)" '.spec.request = $r' w1ok.json > notcsr.json
expect_error "request is a certificate" sign --in notcsr.json
jq --arg r "$(printf -- '-----BEGIN CERTIFICATE REQUEST-----\nTUlJQg==\n-----END CERTIFICATE REQUEST-----\n' | base64 -w0)" \
  '.spec.request = $r' w1ok.json > badpem.json
expect_error "PEM that does not parse" sign --in badpem.json
# A CSR whose signature does not verify: the last byte of the signature flipped.
openssl req -in w1-serving.csr -outform DER -out forged.der
last=$(( $(stat -c %s forged.der) - 1 ))
byte=$(od -An -tu1 -j "$last" -N1 forged.der | tr -d ' ')
printf "$(printf '\\%03o' $(( byte ^ 1 )))" | dd of=forged.der bs=1 seek="$last" conv=notrunc 2>/dev/null
{ echo '-----BEGIN CERTIFICATE REQUEST-----'; openssl base64 -in forged.der; echo '-----END CERTIFICATE REQUEST-----'; } > forged.csr
object json forged.csr kubernetes.io/kubelet-serving "digital signature,server auth" system:node:w1 system:nodes 1 > forged.json
expect_error "CSR signature does not verify" sign --in forged.json
grep -qi signature "$T/.stderr" || fail "forged CSR: the error does not mention the signature: $(cat "$T/.stderr")"; ok
expect_error "no --pki" "$HWCA" k8s sign-csr --config cluster.yaml --in w1ok.json
expect_error "no pki/ca.crt" "$HWCA" k8s sign-csr --config cluster.yaml --pki out/pki --in w1ok.json
expect_error "bad --signing-duration" sign --signing-duration 5d --in w1ok.json
[ "$(ledger_rows)" -eq "$issued" ] || fail "malformed input issued something"; ok

# --signing-duration caps the lifetime.
sign --signing-duration 24h --in w1ok.json > capped.out
certificate_of capped.out > capped.crt
[ "$(validity_seconds capped.crt)" -eq $((24 * 3600)) ] || fail "--signing-duration 24h: validity $(validity_seconds capped.crt)"; ok

finish
