#!/usr/bin/env bash
# hwca k8s init on examples/loopback-cluster.yaml, unchanged, with its three CA keys generated inside a
# real SoftHSM2 token: every certificate checked against spec §1-2 (subject, issuer, keyUsage,
# extKeyUsage, SANs, validity, `openssl verify` against the right CA), the layout (modes, no CA key on
# disk, per-node folders, flags), idempotency (a second run changes nothing byte for byte; a new SAN and
# a new control-plane node re-issue exactly the apiserver and the new node's certificates and say why;
# the CAs are never re-keyed), the ledger, check-expiration, renew, and the cluster file's bad input.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1

CLUSTER="$HWCA_SOURCE_DIR/examples/loopback-cluster.yaml"
make_token hwca-example
HWCA_PIN=$(cat "$T/hwca-example.pin")
export HWCA_PIN
OUT="$T/out"

"$HWCA" k8s init --config "$CLUSTER" --out "$OUT" > init1.out 2> init1.err || fail "init failed: $(cat init1.err)"
[ ! -s init1.err ] || fail "init wrote to stderr: $(cat init1.err)"
grep -q '^init: 26 certificates issued, 0 kept' init1.out || fail "init summary: $(tail -1 init1.out)"
for ca in kubernetes-ca etcd-ca front-proxy-ca; do
  grep -q "object=$ca): new ecdsa-p256 key generated in the device" init1.out || fail "$ca key not generated in the token: $(cat init1.out)"
done
ok
privkeys() {
  pkcs11-tool --module "$SOFTHSM_MODULE" --token-label hwca-example --login --pin "$HWCA_PIN" --list-objects --type privkey 2>/dev/null |
    grep -c '^Private Key Object'
}
[ "$(privkeys)" = 3 ] || fail "the token holds $(privkeys) private keys, want 3"
ok
cd "$OUT"

# --- The certificates, table-driven (spec §1.1, §1.2, §1.3, §2). ---------------------------------
# Kubeconfig-embedded client certificates are read with kubectl itself.
kc_cert() {
  kubectl config view --kubeconfig "$1" --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d > "$2"
  kubectl config view --kubeconfig "$1" --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d > "$2.key"
}
CA_KU="Digital Signature, Key Encipherment, Certificate Sign, CRL Sign"
EC_KU="Digital Signature"
SRV="TLS Web Server Authentication"
CLI="TLS Web Client Authentication"
PEER="$SRV, $CLI"
LEAF_SECONDS=$((8760 * 3600))
CA_SECONDS=$((87600 * 3600))
API_SANS="DNS:cp1, DNS:cp2, DNS:cp3, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:127.0.0.1"
etcd_sans() { echo "DNS:$1, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"; }
# file | issuing CA file | subject (RFC 2253) | keyUsage | extKeyUsage | SANs | seconds
rows=(
  "pki/ca.crt|pki/ca.crt|CN=kubernetes|$CA_KU||DNS:kubernetes|$CA_SECONDS"
  "pki/etcd/ca.crt|pki/etcd/ca.crt|CN=etcd-ca|$CA_KU||DNS:etcd-ca|$CA_SECONDS"
  "pki/front-proxy-ca.crt|pki/front-proxy-ca.crt|CN=front-proxy-ca|$CA_KU||DNS:front-proxy-ca|$CA_SECONDS"
  "pki/apiserver.crt|pki/ca.crt|CN=kube-apiserver|$EC_KU|$SRV|$API_SANS|$LEAF_SECONDS"
  "pki/apiserver-kubelet-client.crt|pki/ca.crt|CN=kube-apiserver-kubelet-client,O=kubeadm:cluster-admins|$EC_KU|$CLI||$LEAF_SECONDS"
  "pki/apiserver-etcd-client.crt|pki/etcd/ca.crt|CN=kube-apiserver-etcd-client|$EC_KU|$CLI||$LEAF_SECONDS"
  "pki/front-proxy-client.crt|pki/front-proxy-ca.crt|CN=front-proxy-client|$EC_KU|$CLI||$LEAF_SECONDS"
  "pki/etcd/healthcheck-client.crt|pki/etcd/ca.crt|CN=kube-etcd-healthcheck-client|$EC_KU|$CLI||$LEAF_SECONDS"
  "pki/etcd/server.crt|pki/etcd/ca.crt|CN=cp1|$EC_KU|$PEER|$(etcd_sans cp1)|$LEAF_SECONDS"
  "pki/etcd/peer.crt|pki/etcd/ca.crt|CN=cp1|$EC_KU|$PEER|$(etcd_sans cp1)|$LEAF_SECONDS"
  "pki/kubelet.crt|pki/ca.crt|CN=system:node:cp1,O=system:nodes|$EC_KU|$SRV|DNS:cp1, IP Address:127.0.0.1|$LEAF_SECONDS"
)
for n in cp1 cp2 cp3; do
  rows+=("nodes/$n/pki/etcd/server.crt|pki/etcd/ca.crt|CN=$n|$EC_KU|$PEER|$(etcd_sans $n)|$LEAF_SECONDS")
  rows+=("nodes/$n/pki/etcd/peer.crt|pki/etcd/ca.crt|CN=$n|$EC_KU|$PEER|$(etcd_sans $n)|$LEAF_SECONDS")
done
for n in cp1 cp2 cp3 w1; do
  rows+=("nodes/$n/pki/kubelet.crt|pki/ca.crt|CN=system:node:$n,O=system:nodes|$EC_KU|$SRV|DNS:$n, IP Address:127.0.0.1|$LEAF_SECONDS")
  kc_cert "nodes/$n/kubelet.conf" "$T/kubelet-$n.pem"
  rows+=("$T/kubelet-$n.pem|pki/ca.crt|CN=system:node:$n,O=system:nodes|$EC_KU|$CLI||$LEAF_SECONDS")
done
kc_cert admin.conf "$T/admin.pem"
kc_cert super-admin.conf "$T/super-admin.pem"
kc_cert controller-manager.conf "$T/cm.pem"
kc_cert scheduler.conf "$T/sched.pem"
rows+=("$T/admin.pem|pki/ca.crt|CN=kubernetes-admin,O=kubeadm:cluster-admins|$EC_KU|$CLI||$LEAF_SECONDS")
rows+=("$T/super-admin.pem|pki/ca.crt|CN=kubernetes-super-admin,O=system:masters|$EC_KU|$CLI||$LEAF_SECONDS")
rows+=("$T/cm.pem|pki/ca.crt|CN=system:kube-controller-manager|$EC_KU|$CLI||$LEAF_SECONDS")
rows+=("$T/sched.pem|pki/ca.crt|CN=system:kube-scheduler|$EC_KU|$CLI||$LEAF_SECONDS")

subject_of() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 | sed 's/^subject=//'; }
issuer_of() { openssl x509 -in "$1" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//'; }
for row in "${rows[@]}"; do
  IFS='|' read -r file ca subject ku eku sans seconds <<< "$row"
  [ "$(subject_of "$file")" = "$subject" ] || fail "$file: subject $(subject_of "$file"), want $subject"
  [ "$(issuer_of "$file")" = "$(subject_of "$ca")" ] || fail "$file: issuer $(issuer_of "$file"), want $(subject_of "$ca")"
  [ "$(ext_line "$file" keyUsage)" = "X509v3 Key Usage: critical $ku" ] || fail "$file: $(ext_line "$file" keyUsage), want $ku"
  if [ -n "$eku" ]; then
    [ "$(ext_value "$file" extendedKeyUsage)" = "$eku" ] || fail "$file: EKU $(ext_value "$file" extendedKeyUsage), want $eku"
  else
    [ -z "$(ext_value "$file" extendedKeyUsage)" ] || fail "$file: unexpected EKU $(ext_value "$file" extendedKeyUsage)"
  fi
  [ "$(ext_value "$file" subjectAltName)" = "$sans" ] || fail "$file: SANs $(ext_value "$file" subjectAltName), want $sans"
  if [ "$ca" = "$file" ]; then
    [ "$(ext_line "$file" basicConstraints)" = "X509v3 Basic Constraints: critical CA:TRUE" ] || fail "$file: $(ext_line "$file" basicConstraints)"
    [ -z "$(aki "$file")" ] || fail "$file: a self-signed CA with an AKI (kubeadm's have none)"
  else
    [ "$(ext_line "$file" basicConstraints)" = "X509v3 Basic Constraints: critical CA:FALSE" ] || fail "$file: $(ext_line "$file" basicConstraints)"
    [ "$(aki "$file")" = "$(ski "$ca")" ] || fail "$file: AKI is not $ca's SKI"
  fi
  [ "$(validity_seconds "$file")" = "$seconds" ] || fail "$file: valid for $(validity_seconds "$file") s, want $seconds"
  # Backdated by five minutes from issuance (now), as kubeadm.
  nb=$(date -u -d "$(openssl x509 -in "$file" -noout -startdate | cut -d= -f2)" +%s)
  [ $(( $(date +%s) - nb )) -ge 240 ] && [ $(( $(date +%s) - nb )) -le 600 ] || fail "$file: notBefore not ~5 minutes back"
  out=$(openssl verify -CAfile "$ca" "$file" 2>&1) || fail "openssl verify $file against $ca: $out"
  # ...and against the other two CAs it does not verify.
  for other in pki/ca.crt pki/etcd/ca.crt pki/front-proxy-ca.crt; do
    [ "$other" = "$ca" ] && continue
    if openssl verify -CAfile "$other" "$file" >/dev/null 2>&1; then fail "$file verifies against $other"; fi
  done
  ok
done
[ "${#rows[@]}" = 29 ] || fail "table has ${#rows[@]} rows"
# Each key is the private half of its certificate.
same_pubkey pki/apiserver.crt pki/apiserver.key
same_pubkey nodes/cp2/pki/etcd/peer.crt nodes/cp2/pki/etcd/peer.key
same_pubkey "$T/admin.pem" "$T/admin.pem.key"

# --- The layout. -------------------------------------------------------------------------------
for f in pki/ca.crt pki/apiserver.crt pki/apiserver.key pki/apiserver-kubelet-client.crt pki/apiserver-kubelet-client.key \
         pki/apiserver-etcd-client.crt pki/apiserver-etcd-client.key pki/front-proxy-ca.crt pki/front-proxy-client.crt \
         pki/front-proxy-client.key pki/etcd/ca.crt pki/etcd/server.crt pki/etcd/server.key pki/etcd/peer.crt pki/etcd/peer.key \
         pki/etcd/healthcheck-client.crt pki/etcd/healthcheck-client.key pki/sa.key pki/sa.pub admin.conf super-admin.conf \
         controller-manager.conf scheduler.conf kubelet.conf nodes/w1/kubelet.conf nodes/w1/pki/ca.crt nodes/cp3/pki/etcd/server.crt \
         flags/kube-apiserver.flags flags/kube-controller-manager.flags flags/etcd.flags nodes/w1/flags/kubelet.flags; do
  [ -f "$f" ] || fail "missing $f"
done
ok
[ -z "$(find . -name '*ca.key' -o -name 'ca-key*')" ] || fail "a CA key on disk: $(find . -name '*ca.key')"
[ -z "$(find . -name '*.key' ! -perm 600)" ] || fail "keys not 0600: $(find . -name '*.key' ! -perm 600)"
[ -z "$(find . -name '*.conf' ! -perm 600)" ] || fail "kubeconfigs not 0600"
[ ! -e nodes/w1/pki/apiserver.key ] && [ ! -e nodes/w1/pki/etcd/server.key ] && [ ! -e nodes/w1/admin.conf ] ||
  fail "the worker's folder holds control-plane secrets"
cmp -s pki/etcd/server.crt nodes/cp1/pki/etcd/server.crt && cmp -s kubelet.conf nodes/cp1/kubelet.conf &&
  cmp -s pki/apiserver.key nodes/cp3/pki/apiserver.key && cmp -s pki/sa.key nodes/cp2/pki/sa.key || fail "node copies differ"
! cmp -s nodes/cp1/pki/etcd/server.crt nodes/cp2/pki/etcd/server.crt || fail "cp1 and cp2 share an etcd server certificate"
[ "$(openssl pkey -in pki/sa.key -pubout)" = "$(cat pki/sa.pub)" ] || fail "sa.pub is not sa.key's public half"
grep -qx -- '--controllers=\*,-csrsigning' flags/kube-controller-manager.flags || fail "controller-manager flags: $(cat flags/kube-controller-manager.flags)"
grep -qx -- '--service-account-signing-key-file=/etc/kubernetes/pki/sa.key' flags/kube-apiserver.flags || fail "apiserver flags"
grep -qx -- '--peer-client-cert-auth=true' nodes/cp2/flags/etcd.flags && grep -qx -- '--name=cp2' nodes/cp2/flags/etcd.flags || fail "etcd flags"
[ "$(kubectl config view --kubeconfig admin.conf -o jsonpath='{.current-context}')" = "kubernetes-admin@kubernetes" ] || fail "admin.conf context"
[ "$(kubectl config view --kubeconfig controller-manager.conf -o jsonpath='{.clusters[0].cluster.server}')" = "https://127.0.0.1:6443" ] ||
  fail "controller-manager.conf server"
[ "$(kubectl config view --kubeconfig nodes/w1/kubelet.conf --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d)" = "$(cat pki/ca.crt)" ] ||
  fail "kubelet.conf CA data"
ok
# The ledger holds every certificate, requested by "cli:k8s init".
"$HWCA" ledger list --output json > "$T/ledger.json"
[ "$(jq '[.[] | select(.requester | startswith("cli:k8s init"))] | length' "$T/ledger.json")" = 26 ] || fail "ledger: $(jq length "$T/ledger.json") entries"
ok

# --- Idempotency. ---------------------------------------------------------------------------------
sums() { (cd "$OUT" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
sums > "$T/sums1"
"$HWCA" k8s init --config "$CLUSTER" --out "$OUT" > "$T/init2.out" || fail "second init failed"
[ "$(cat "$T/init2.out")" = "init: 0 certificates issued, 26 kept; 0 files written, 126 unchanged ($OUT)" ] || fail "second init: $(cat "$T/init2.out")"
sums > "$T/sums2"
cmp -s "$T/sums1" "$T/sums2" || fail "second init changed files: $(diff "$T/sums1" "$T/sums2")"
ok
# A VIP SAN and a fourth control-plane node.
sed -e 's/^  - {name: cp3, ip: 127.0.0.1}$/&\n  - {name: cp4, ip: 127.0.0.1}/' -e 's/^keyAlgorithm:/apiServerCertSANs: [10.0.0.77, api.example.com]\n&/' \
  "$CLUSTER" > "$T/grown.yaml"
grep -q cp4 "$T/grown.yaml" && grep -q 10.0.0.77 "$T/grown.yaml" || fail "sed did not grow the cluster file"
"$HWCA" k8s init --config "$T/grown.yaml" --out "$OUT" > "$T/init3.out" || fail "third init failed"
grep '^issued ' "$T/init3.out" | sed 's/ (.*//' | sort > "$T/issued3"
printf '%s\n' "issued apiserver" "issued cp4/etcd-peer" "issued cp4/etcd-server" "issued cp4/kubelet" "issued cp4/kubelet.conf" |
  sort > "$T/want3"
diff "$T/want3" "$T/issued3" > /dev/null || fail "grown cluster issued: $(cat "$T/issued3")"
grep -q '^issued apiserver (pki/apiserver.crt): SANs changed: +DNS:api.example.com, +DNS:cp4, +IP:10.0.0.77$' "$T/init3.out" ||
  fail "no reason given: $(grep apiserver "$T/init3.out")"
grep -q '^issued cp4/etcd-server (nodes/cp4/pki/etcd/server.crt): missing$' "$T/init3.out" || fail "cp4: $(cat "$T/init3.out")"
ok
sums > "$T/sums3"
# Existing certificates, keys and kubeconfigs that changed: exactly the apiserver certificate and its copies.
changed=$(join -j 2 <(sort -k2 "$T/sums1") <(sort -k2 "$T/sums3") | awk '$2 != $3 {print $1}' | grep -E '\.(crt|key|conf|pub)$' | sort | tr '\n' ' ')
[ "$changed" = "./nodes/cp1/pki/apiserver.crt ./nodes/cp2/pki/apiserver.crt ./nodes/cp3/pki/apiserver.crt ./pki/apiserver.crt " ] ||
  fail "changed besides the apiserver: $changed"
cmp -s <(openssl x509 -in pki/apiserver.crt -noout -pubkey) <(openssl pkey -in pki/apiserver.key -pubout) || fail "apiserver key"
ext_value pki/apiserver.crt subjectAltName | grep -q 'DNS:api.example.com, IP Address:10.96.0.1, IP Address:127.0.0.1, IP Address:10.0.0.77' ||
  fail "apiserver SANs: $(ext_value pki/apiserver.crt subjectAltName)"
openssl verify -CAfile pki/etcd/ca.crt nodes/cp4/pki/etcd/server.crt >/dev/null || fail "cp4 etcd server"
grep -qx -- '--initial-cluster=cp1=https://127.0.0.1:2380,cp2=https://127.0.0.1:2380,cp3=https://127.0.0.1:2380,cp4=https://127.0.0.1:2380' \
  nodes/cp4/flags/etcd.flags || fail "cp4 etcd flags"
# Never re-keyed: the CA certificates are the same bytes and the token holds the same three keys.
grep -q '^issued ca\|^issued etcd-ca\|^issued front-proxy-ca' "$T/init3.out" && fail "a CA was re-issued"
[ "$(privkeys)" = 3 ] || fail "the token now holds $(privkeys) private keys"
ok

# --- A CA certificate that does not belong to the configured key: refused, nothing written. -----
cp pki/ca.crt "$T/ca.crt.good"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/other-ca.key" -out "$T/other-ca.crt" \
  -subj /CN=kubernetes -days 30 2>/dev/null
cp "$T/other-ca.crt" pki/ca.crt
expect_error "init with a foreign ca.crt" "$HWCA" k8s init --config "$CLUSTER" --out "$OUT"
grep -q 'pki/ca.crt does not belong to the key pkcs11:token=hwca-example;object=kubernetes-ca' "$T/.stderr" || fail "$(cat "$T/.stderr")"
cp "$T/ca.crt.good" pki/ca.crt
sums > "$T/sums4"
"$HWCA" k8s init --config "$T/grown.yaml" --out "$OUT" > /dev/null
sums > "$T/sums5"
cmp -s "$T/sums4" "$T/sums5" || fail "init after restoring ca.crt changed files"
ok

# --- renew. --------------------------------------------------------------------------------------
# A certificate issued by another CA is refused by renew (and re-issued by init, saying why).
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/foreign.key" -out "$T/foreign.csr" \
  -subj /CN=kube-apiserver 2>/dev/null
openssl x509 -req -in "$T/foreign.csr" -CA "$T/other-ca.crt" -CAkey "$T/other-ca.key" -CAcreateserial -days 30 \
  -out "$T/foreign.crt" 2>/dev/null
cp pki/apiserver.crt "$T/apiserver.crt.good"; cp pki/apiserver.key "$T/apiserver.key.good"
cp "$T/foreign.crt" pki/apiserver.crt; cp "$T/foreign.key" pki/apiserver.key
expect_error "renew a certificate of another CA" "$HWCA" k8s renew --config "$T/grown.yaml" --out "$OUT" apiserver
grep -q 'pki/apiserver.crt was issued by CN=kubernetes, not by the configured kubernetes-ca (CN=kubernetes): refusing to renew it' "$T/.stderr" ||
  fail "$(cat "$T/.stderr")"
cmp -s "$T/foreign.crt" pki/apiserver.crt || fail "the refused renew wrote pki/apiserver.crt"
"$HWCA" k8s init --config "$T/grown.yaml" --out "$OUT" > "$T/init6.out"
grep -q '^issued apiserver (pki/apiserver.crt): not issued by the configured kubernetes-ca' "$T/init6.out" || fail "init6: $(cat "$T/init6.out")"
openssl verify -CAfile pki/ca.crt pki/apiserver.crt > /dev/null || fail "apiserver after init"
ok
expect_error "renew an unknown certificate" "$HWCA" k8s renew --config "$T/grown.yaml" --out "$OUT" apiserverr
expect_error "renew without names" "$HWCA" k8s renew --config "$T/grown.yaml" --out "$OUT"
# Renew with new keys (the default), then with --reuse-keys; only the named certificates change.
sums > "$T/sums6"
cp pki/front-proxy-client.key "$T/fpc.key.1"
"$HWCA" k8s renew --config "$T/grown.yaml" --out "$OUT" front-proxy-client cp2/etcd-peer > "$T/renew1.out" || fail "renew failed"
grep -q '^renew: 2 certificates issued' "$T/renew1.out" || fail "renew: $(cat "$T/renew1.out")"
! cmp -s "$T/fpc.key.1" pki/front-proxy-client.key || fail "renew kept the key"
same_pubkey pki/front-proxy-client.crt pki/front-proxy-client.key
openssl verify -CAfile pki/front-proxy-ca.crt pki/front-proxy-client.crt >/dev/null || fail "renewed front-proxy-client"
sums > "$T/sums7"
changed=$(join -j 2 <(sort -k2 "$T/sums6") <(sort -k2 "$T/sums7") | awk '$2 != $3 {print $1}' | sort | tr '\n' ' ')
expect="./nodes/cp1/pki/front-proxy-client.crt ./nodes/cp1/pki/front-proxy-client.key ./nodes/cp2/pki/etcd/peer.crt ./nodes/cp2/pki/etcd/peer.key ./nodes/cp2/pki/front-proxy-client.crt ./nodes/cp2/pki/front-proxy-client.key ./nodes/cp3/pki/front-proxy-client.crt ./nodes/cp3/pki/front-proxy-client.key ./nodes/cp4/pki/front-proxy-client.crt ./nodes/cp4/pki/front-proxy-client.key ./pki/front-proxy-client.crt ./pki/front-proxy-client.key "
[ "$changed" = "$expect" ] || fail "renew changed: $changed"
cp pki/front-proxy-client.key "$T/fpc.key.2"; cp pki/front-proxy-client.crt "$T/fpc.crt.2"
"$HWCA" k8s renew --config "$T/grown.yaml" --out "$OUT" --reuse-keys front-proxy-client > /dev/null || fail "renew --reuse-keys failed"
cmp -s "$T/fpc.key.2" pki/front-proxy-client.key || fail "--reuse-keys changed the key"
! cmp -s "$T/fpc.crt.2" pki/front-proxy-client.crt || fail "--reuse-keys did not renew"
ok

# --- check-expiration: a cluster whose leaves live 10 days is flagged. ---------------------------
"$HWCA" k8s check-expiration --pki "$OUT" > "$T/exp1.txt" || fail "check-expiration failed"
grep -Eq '^apiserver +[A-Z][a-z]{2} [0-9]{2}, [0-9]{4} [0-9]{2}:[0-9]{2} UTC +36[45]d +ca +ok$' "$T/exp1.txt" || fail "check-expiration: $(cat "$T/exp1.txt")"
grep -Eq '^etcd-ca +.* +9y +ok$' "$T/exp1.txt" || fail "check-expiration CAs: $(cat "$T/exp1.txt")"
grep -Eq '^cp2/etcd-peer +.* etcd-ca +ok$' "$T/exp1.txt" || fail "check-expiration nodes: $(cat "$T/exp1.txt")"
! grep -q 'EXPIRES SOON' "$T/exp1.txt" || fail "a fresh cluster flagged"
ok
sed 's/^  leaf: 8760h$/  leaf: 240h/' "$CLUSTER" > "$T/short.yaml"
grep -q 'leaf: 240h' "$T/short.yaml" || fail "sed did not shorten the validity"
"$HWCA" k8s init --config "$T/short.yaml" --out "$T/short" > /dev/null || fail "init short failed"
"$HWCA" k8s check-expiration --pki "$T/short" > "$T/exp2.txt"
grep -Eq '^apiserver +.* +(9|10)d +ca +EXPIRES SOON$' "$T/exp2.txt" || fail "10-day certificate not flagged: $(cat "$T/exp2.txt")"
grep -Eq '^ca +.* +9y +ok$' "$T/exp2.txt" || fail "CA flagged: $(cat "$T/exp2.txt")"
"$HWCA" k8s check-expiration --pki "$T/short" --output json > "$T/exp2.json"
[ "$(jq -r '.certificates[] | select(.name == "admin.conf") | .expiresSoon' "$T/exp2.json")" = true ] || fail "json: $(head -30 "$T/exp2.json")"
[ "$(jq -r '.certificateAuthorities[] | select(.name == "front-proxy-ca") | .expiresSoon' "$T/exp2.json")" = false ] || fail "json CAs"
[ "$(jq -r .kind "$T/exp2.json")" = CertificateExpirationInfo ] || fail "json kind"
ok
# The same CA keys (same token): the second folder's CA certificates are new, over the same keys.
[ "$(openssl x509 -in "$T/short/pki/ca.crt" -noout -pubkey)" = "$(openssl x509 -in pki/ca.crt -noout -pubkey)" ] || fail "short: another CA key"
[ "$(privkeys)" = 3 ] || fail "the token now holds $(privkeys) private keys"
ok

# --- init --only (kubeadm's `init phase certs NAME`): the named certificates and their CAs, nothing else.
expect_error "init --only an unknown certificate" "$HWCA" k8s init --config "$CLUSTER" --out "$T/only" --only apiserver,nope
grep -qF "init --only: unknown certificate 'nope' (known: " "$T/.stderr" || fail "unknown --only name: $(cat "$T/.stderr")"
[ ! -e "$T/only" ] || fail "a refused --only wrote $T/only"
"$HWCA" k8s init --config "$CLUSTER" --out "$T/only" --only apiserver,cp2/etcd-server --only admin.conf > "$T/only.out" ||
  fail "init --only failed"
grep -q '^init: 5 certificates issued, 0 kept' "$T/only.out" || fail "init --only: $(cat "$T/only.out")"
for want in "issued ca " "issued etcd-ca " "issued apiserver " "issued cp2/etcd-server " "issued admin.conf "; do
  grep -q "^$want" "$T/only.out" || fail "init --only did not say '$want': $(cat "$T/only.out")"
done
openssl verify -CAfile "$T/only/pki/ca.crt" "$T/only/pki/apiserver.crt" > /dev/null || fail "--only apiserver does not verify"
openssl verify -CAfile "$T/only/pki/etcd/ca.crt" "$T/only/nodes/cp2/pki/etcd/server.crt" > /dev/null || fail "--only cp2/etcd-server"
[ "$(openssl x509 -in "$T/only/nodes/cp2/pki/etcd/server.crt" -noout -subject -nameopt RFC2253)" = "subject=CN=cp2" ] ||
  fail "--only cp2/etcd-server subject"
[ "$(kubectl config view --kubeconfig "$T/only/admin.conf" -o jsonpath='{.contexts[0].name}')" = kubernetes-admin@kubernetes ] ||
  fail "--only admin.conf is not a kubeconfig kubectl reads"
for f in pki/front-proxy-ca.crt pki/sa.key pki/etcd/server.crt pki/apiserver-kubelet-client.crt super-admin.conf flags; do
  [ ! -e "$T/only/$f" ] || fail "init --only wrote $f"
done
[ "$(privkeys)" = 3 ] || fail "init --only: the token now holds $(privkeys) private keys"
ok

# --- Bad input: file:line: field, nothing written. -----------------------------------------------
bad() {
  local desc=$1 want=$2 file="$T/bad.yaml"
  cat > "$file"
  expect_error "$desc" "$HWCA" k8s init --config "$file" --out "$T/bad-out"
  grep -qF -- "$want" "$T/.stderr" || fail "$desc: $(cat "$T/.stderr"), want $want"
  [ ! -e "$T/bad-out" ] || fail "$desc: wrote $T/bad-out"
}
bad "non-CIDR" "bad.yaml:4: serviceSubnet: '10.254.0.0' is not a CIDR" < <(sed 's#^serviceSubnet: .*#serviceSubnet: 10.254.0.0#' "$CLUSTER" | grep -v '^#')
bad "subnet too small" "bad.yaml:4: serviceSubnet: '10.96.0.0/29' is too small" < <(sed 's#^serviceSubnet: .*#serviceSubnet: 10.96.0.0/29#' "$CLUSTER" | grep -v '^#')
bad "duplicate names" "controlPlane[1].name: duplicate node name 'cp1'" < <(sed 's/name: cp2/name: cp1/' "$CLUSTER")
bad "bad IP" "controlPlane[0].ip: '127.0.0.256' is not an IP address" < <(sed 's/name: cp1, ip: 127.0.0.1/name: cp1, ip: 127.0.0.256/' "$CLUSTER")
bad "bad node name" "workers[0].name: 'W_1' is not a DNS label" < <(sed 's/name: w1/name: W_1/' "$CLUSTER")
bad "unknown algorithm" "keyAlgorithm: unknown key algorithm" < <(sed 's/^keyAlgorithm: .*/keyAlgorithm: ed448/' "$CLUSTER")
bad "empty control plane" "controlPlane: is empty" < <(printf 'controlPlane: []\n'; sed -n '/^cas:/,$p' "$CLUSTER")
grep -n 'object=kubernetes-ca' "$CLUSTER" | head -1 | cut -d: -f1 > "$T/line"
bad "missing token" "bad.yaml:$(cat "$T/line"): cas.kubernetes-ca.key: " < <(sed 's/token=hwca-example;object=kubernetes-ca/token=no-such-token;object=kubernetes-ca/' "$CLUSTER")
grep -q 'no-such-token' "$T/.stderr" || fail "missing token: $(cat "$T/.stderr")"
expect_error "missing cluster file" "$HWCA" k8s init --config "$T/nope.yaml" --out "$T/bad-out"
expect_error "check-expiration of no folder" "$HWCA" k8s check-expiration --pki "$T/nope"
finish
