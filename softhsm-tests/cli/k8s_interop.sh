#!/usr/bin/env bash
# The PKI `hwca k8s init` makes for examples/loopback-cluster.yaml (CA keys in a real SoftHSM2 token),
# used by real programs on loopback:
#  - a 3-member etcd cluster started with each node's generated etcd/server and etcd/peer certificates,
#    --client-cert-auth and --peer-client-cert-auth, forms a quorum; etcdctl with the generated
#    apiserver-etcd-client certificate puts and gets a key; etcdctl without a client certificate is refused;
#  - the machine's kubectl with admin.conf, a node's kubelet.conf and controller-manager.conf (server
#    overridden to a loopback port, --tls-server-name kubernetes.default.svc) completes the TLS handshake
#    with an `openssl s_server` that presents the generated apiserver certificate and demands a client
#    certificate from the generated CA. s_server answers with an HTML page, so kubectl then fails to
#    parse the response: the test asserts the handshake from s_server's log and kubectl's error text.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1

# HWCA_K8S_BACKEND=tpm2 (tpm2_k8s_interop.sh): the same checks with the three CA keys in a swtpm.
CLUSTER="$HWCA_SOURCE_DIR/examples/loopback-cluster.yaml"
if [ "${HWCA_K8S_BACKEND:-pkcs11}" = tpm2 ]; then
  source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-tpm2.bash" || exit 1
  export TSS2_LOG=all+NONE
  start_swtpm k8s
  sed -E -e "s#key: \"pkcs11:[^\"]*object=([a-z-]+)\?[^\"]*\"#key: \"tpm2:file=$T/\1.tss2.pem?tcti=$SWTPM_TCTI\"#" \
    "$CLUSTER" > "$T/cluster-tpm2.yaml"
  [ "$(grep -c 'key: "tpm2:file=' "$T/cluster-tpm2.yaml")" = 3 ] || fail "could not point the cluster file at the TPM"
  CLUSTER="$T/cluster-tpm2.yaml"
else
  make_token hwca-example
  HWCA_PIN=$(cat "$T/hwca-example.pin")
  export HWCA_PIN
fi
OUT="$T/out"
"$HWCA" k8s init --config "$CLUSTER" --out "$OUT" > init.out 2> init.err ||
  fail "init failed: $(cat init.err)"
ok

# --- etcd: three members, each with its own node folder. ----------------------------------------
free_port C1; free_port P1; free_port C2; free_port P2; free_port C3; free_port P3
declare -A CLIENT=([cp1]=$C1 [cp2]=$C2 [cp3]=$C3) PEER=([cp1]=$P1 [cp2]=$P2 [cp3]=$P3)
INITIAL="cp1=https://127.0.0.1:$P1,cp2=https://127.0.0.1:$P2,cp3=https://127.0.0.1:$P3"
for n in cp1 cp2 cp3; do
  pki="$OUT/nodes/$n/pki/etcd"
  start_bg etcd --name "$n" --data-dir "$T/etcd-$n" \
    --listen-client-urls "https://127.0.0.1:${CLIENT[$n]}" --advertise-client-urls "https://127.0.0.1:${CLIENT[$n]}" \
    --listen-peer-urls "https://127.0.0.1:${PEER[$n]}" --initial-advertise-peer-urls "https://127.0.0.1:${PEER[$n]}" \
    --initial-cluster "$INITIAL" --initial-cluster-state new --initial-cluster-token hwca-k8s-etcd \
    --cert-file "$pki/server.crt" --key-file "$pki/server.key" --trusted-ca-file "$pki/ca.crt" --client-cert-auth \
    --peer-cert-file "$pki/peer.crt" --peer-key-file "$pki/peer.key" --peer-trusted-ca-file "$pki/ca.crt" --peer-client-cert-auth \
    > "$T/etcd-$n.log" 2>&1
done
export ETCDCTL_API=3
ENDPOINTS="https://127.0.0.1:$C1,https://127.0.0.1:$C2,https://127.0.0.1:$C3"
ctl() {
  etcdctl --dial-timeout=3s --command-timeout=5s --cacert="$OUT/pki/etcd/ca.crt" \
    --cert="$OUT/pki/apiserver-etcd-client.crt" --key="$OUT/pki/apiserver-etcd-client.key" "$@"
}
ready=0
for _ in $(seq 1 60); do
  if ctl --endpoints="$ENDPOINTS" endpoint health >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || fail "etcd did not become healthy: $(tail -3 "$T"/etcd-cp*.log)"
ok
ctl --endpoints="$ENDPOINTS" member list > members.txt || fail "member list failed"
[ "$(grep -c ', started, ' members.txt)" = 3 ] || fail "member list: $(cat members.txt)"
for n in cp1 cp2 cp3; do grep -q ", $n, https://127.0.0.1:${PEER[$n]}" members.txt || fail "member $n: $(cat members.txt)"; done
ok
# One leader among the three (a quorum).
ctl --endpoints="$ENDPOINTS" endpoint status -w json > status.json || fail "endpoint status failed"
[ "$(jq '[.[].Status.leader] | unique | length' status.json)" = 1 ] || fail "no single leader: $(cat status.json)"
[ "$(jq '[.[] | select(.Status.header.member_id == .Status.leader)] | length' status.json)" = 1 ] || fail "leader: $(cat status.json)"
ok
ctl --endpoints="https://127.0.0.1:$C1" put /hwca/k8s "issued through SoftHSM2" > put.out || fail "put failed"
[ "$(cat put.out)" = OK ] || fail "put: $(cat put.out)"
got=""
for _ in $(seq 1 20); do
  got=$(ctl --endpoints="https://127.0.0.1:$C3" get /hwca/k8s --print-value-only 2>/dev/null) || true
  [ "$got" = "issued through SoftHSM2" ] && break
  sleep 0.25
done
[ "$got" = "issued through SoftHSM2" ] || fail "get from cp3: '$got'"
ok
# Each member serves its own node's certificate.
for n in cp1 cp3; do
  openssl s_client -connect "127.0.0.1:${CLIENT[$n]}" -CAfile "$OUT/pki/etcd/ca.crt" \
    -cert "$OUT/pki/etcd/healthcheck-client.crt" -key "$OUT/pki/etcd/healthcheck-client.key" </dev/null > "s_client.$n" 2>&1 || true
  grep -q 'Verify return code: 0 (ok)' "s_client.$n" || fail "s_client to $n: $(tail -5 "s_client.$n")"
  [ "$(openssl x509 -in "s_client.$n" -noout -subject -nameopt RFC2253)" = "subject=CN=$n" ] || fail "$n serves another certificate"
  ok
done
# Without a client certificate, and with a client certificate from another CA: refused.
if etcdctl --dial-timeout=3s --command-timeout=3s --cacert="$OUT/pki/etcd/ca.crt" --endpoints="https://127.0.0.1:$C1" \
     get /hwca/k8s > nocert.out 2>&1; then
  fail "etcd answered a client without a certificate"
fi
ok
if etcdctl --dial-timeout=3s --command-timeout=3s --cacert="$OUT/pki/etcd/ca.crt" --endpoints="https://127.0.0.1:$C1" \
     --cert="$OUT/pki/front-proxy-client.crt" --key="$OUT/pki/front-proxy-client.key" get /hwca/k8s > othercert.out 2>&1; then
  fail "etcd answered a client with a front-proxy-ca certificate"
fi
ok

# --- kubectl against openssl s_server with the generated apiserver certificate. -------------------
free_port API
start_bg openssl s_server -accept "127.0.0.1:$API" -cert "$OUT/pki/apiserver.crt" -key "$OUT/pki/apiserver.key" \
  -Verify 1 -CAfile "$OUT/pki/ca.crt" -www > "$T/s_server.log" 2>&1
for _ in $(seq 1 40); do
  grep -q ACCEPT "$T/s_server.log" && break
  sleep 0.25
done
grep -q ACCEPT "$T/s_server.log" || fail "s_server did not start: $(cat "$T/s_server.log")"
kubectl_handshake() {
  local conf=$1 cn=$2
  local before rc
  before=$(grep -c "^depth=0 .*CN = $cn\$" "$T/s_server.log" || true)
  # 1. A raw GET: kubectl prints s_server's status page, which shows the client certificate it accepted.
  rc=0
  timeout 60 kubectl --kubeconfig "$conf" --server "https://127.0.0.1:$API" --tls-server-name kubernetes.default.svc \
    --request-timeout 10s get --raw /version > "$T/kubectl-raw.out" 2> "$T/kubectl-raw.err" || rc=$?
  [ "$rc" = 0 ] || fail "$conf: kubectl get --raw failed: $(cat "$T/kubectl-raw.err")"
  grep -q '^Client certificate' "$T/kubectl-raw.out" || fail "$conf: s_server's page shows no client certificate: $(head -5 "$T/kubectl-raw.out")"
  grep -Eq "^ +Subject: (.*, )?CN=$cn\$" "$T/kubectl-raw.out" || fail "$conf: s_server saw another client: $(grep Subject: "$T/kubectl-raw.out")"
  # 2. An API call: kubectl completes the handshake, then cannot parse the HTML reply (not a TLS error).
  rc=0
  timeout 60 kubectl --kubeconfig "$conf" --server "https://127.0.0.1:$API" --tls-server-name kubernetes.default.svc \
    --request-timeout 10s get nodes > "$T/kubectl.out" 2> "$T/kubectl.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$conf: kubectl parsed s_server's page as a node list?"
  if grep -Eqi 'x509|certificate|tls:|handshake|unknown authority' "$T/kubectl.err"; then fail "$conf: TLS error: $(cat "$T/kubectl.err")"; fi
  grep -q "invalid character '<'" "$T/kubectl.err" || fail "$conf: kubectl did not get s_server's reply: $(cat "$T/kubectl.err")"
  # 3. s_server's log: it verified kubectl's client certificate against the generated CA.
  [ "$(grep -c "^depth=0 .*CN = $cn\$" "$T/s_server.log" || true)" -gt "$before" ] ||
    fail "$conf: s_server logged no client certificate for $cn: $(tail -5 "$T/s_server.log")"
  ! grep -q 'verify error' "$T/s_server.log" || fail "$conf: s_server verify error: $(grep 'verify error' "$T/s_server.log")"
  ok
}
kubectl_handshake "$OUT/admin.conf" kubernetes-admin
kubectl_handshake "$OUT/nodes/w1/kubelet.conf" "system:node:w1"
kubectl_handshake "$OUT/controller-manager.conf" "system:kube-controller-manager"
# kubectl refuses the server when the expected name is not in the apiserver's SANs (so the SANs matter).
rc=0
timeout 60 kubectl --kubeconfig "$OUT/admin.conf" --server "https://127.0.0.1:$API" --tls-server-name not-the-apiserver.example \
  --request-timeout 10s get --raw /version > /dev/null 2> "$T/kubectl-bad.err" || rc=$?
[ "$rc" -ne 0 ] && grep -Eq 'x509|certificate' "$T/kubectl-bad.err" || fail "kubectl accepted a wrong server name: $(cat "$T/kubectl-bad.err")"
ok
finish
