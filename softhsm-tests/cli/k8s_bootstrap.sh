#!/usr/bin/env bash
# hwca k8s bootstrap-token create and hwca k8s manifests end to end, on a cluster made by `hwca k8s init`
# with its CA keys in a real SoftHSM2 token: the token's format, its Secret read back by kubectl field
# by field, each node's bootstrap-kubelet.conf read by kubectl (server = kubelet.conf's, CA = pki/ca.crt,
# the token user and context), modes 0600, the secret never on stdout/stderr nor in the ledger (which
# records the token id), an existing token kept unless --force, the RBAC manifests field by field,
# and bad input (one error line, nothing written). When the kube-apiserver stand-in
# (support/kube_apiserver_standin.py, lib-kube.bash) is present, the manifests and the Secret are
# applied to it and the bootstrap kubeconfig's token creates a CSR as system:bootstrap:<id>.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash"

make_token k8s
cat > cluster.yaml <<EOF
name: kubernetes
controlPlane:
  - {name: cp1, ip: 127.0.0.1}
workers:
  - {name: w1, ip: 127.0.0.2}
  - {name: w2, ip: 127.0.0.3}
cas:
  kubernetes-ca:
    key: "$(key_uri k8s kubernetes-ca)"
  etcd-ca:
    key: "$(key_uri k8s etcd-ca)"
  front-proxy-ca:
    key: "$(key_uri k8s front-proxy-ca)"
EOF
"$HWCA" k8s init --config cluster.yaml --out out > init.out 2> init.err || fail "k8s init: $(cat init.err)"
[ -f out/pki/ca.crt ] && [ -f out/nodes/w1/kubelet.conf ] || fail "k8s init wrote no pki/ca.crt or nodes/w1/kubelet.conf"
ok
NODES=(cp1 w1 w2)

mode() { stat -c %a "$1"; }
# kc FILE JSONPATH: one field of a kubeconfig, as kubectl reads it.
kc() { kubectl config view --kubeconfig "$1" --raw -o jsonpath="$2"; }
# as_json FILE: every object of a YAML file as a JSON array, converted by kubectl itself (offline).
as_json() { KUBECONFIG=/dev/null kubectl annotate --local -f "$1" -o json hwca-test-none- | jq -s .; }

# --- bootstrap-token create into k8s init's folder (--pki defaults to --out). -------------------------
before=$(date +%s)
"$HWCA" k8s bootstrap-token create --config cluster.yaml --out out > bt1.out 2> bt1.err || fail "create: $(cat bt1.err)"
after=$(date +%s)
[ ! -s bt1.err ] || fail "create wrote to stderr: $(cat bt1.err)"
token=$(cat out/bootstrap-token)
[[ "$token" =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]] || fail "token file: '$token'"
id=${BASH_REMATCH[1]} secret=${BASH_REMATCH[2]}
ok
[ "$(wc -c < out/bootstrap-token)" -eq 24 ] || fail "token file is not one line"; ok
head -1 bt1.out | grep -q "^bootstrap token $id (user system:bootstrap:$id), expires " || fail "stdout: $(head -1 bt1.out)"; ok
! grep -q "$secret" bt1.out bt1.err init.out || fail "the token secret was printed"; ok
grep -q "out/bootstrap-token\$" bt1.out && grep -q "out/bootstrap-token-secret.yaml" bt1.out || fail "stdout names no files"; ok
for f in out/bootstrap-token out/bootstrap-token-secret.yaml; do
  [ "$(mode "$f")" = 600 ] || fail "$f mode $(mode "$f")"; ok
done
server=$(kc out/nodes/w1/kubelet.conf '{.clusters[0].cluster.server}')
[ "$server" = "https://127.0.0.1:6443" ] || fail "kubelet.conf server $server"; ok
for n in "${NODES[@]}"; do
  f=out/nodes/$n/bootstrap-kubelet.conf
  [ -f "$f" ] || fail "no $f"
  [ "$(mode "$f")" = 600 ] || fail "$f mode $(mode "$f")"; ok
  grep -q "out/nodes/$n/bootstrap-kubelet.conf" bt1.out || fail "stdout does not name $f"; ok
  [ "$(kc "$f" '{.current-context}')" = "tls-bootstrap-token-user@kubernetes" ] || fail "$f current-context"; ok
  [ "$(kc "$f" '{.contexts[0].name}')" = "tls-bootstrap-token-user@kubernetes" ] || fail "$f context name"; ok
  [ "$(kc "$f" '{.contexts[0].context.cluster}')" = kubernetes ] || fail "$f context cluster"; ok
  [ "$(kc "$f" '{.contexts[0].context.user}')" = tls-bootstrap-token-user ] || fail "$f context user"; ok
  [ "$(kc "$f" '{.clusters[0].name}')" = kubernetes ] || fail "$f cluster name"; ok
  [ "$(kc "$f" '{.clusters[0].cluster.server}')" = "$server" ] || fail "$f server $(kc "$f" '{.clusters[0].cluster.server}')"; ok
  kc "$f" '{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$n.ca"
  cmp -s "$n.ca" out/pki/ca.crt || fail "$f CA is not pki/ca.crt"; ok
  [ "$(kc "$f" '{.users[0].name}')" = tls-bootstrap-token-user ] || fail "$f user name"; ok
  [ "$(kc "$f" '{.users[0].user.token}')" = "$token" ] || fail "$f token"; ok
  [ -z "$(kc "$f" '{.users[0].user.client-certificate-data}')" ] || fail "$f has a client certificate"; ok
done

# The Secret, read by kubectl, field by field.
as_json out/bootstrap-token-secret.yaml > secret.json
[ "$(jq length secret.json)" = 1 ] || fail "the Secret file holds $(jq length secret.json) objects"; ok
jq -e --arg id "$id" '.[0] | .apiVersion == "v1" and .kind == "Secret" and .metadata.name == "bootstrap-token-\($id)"
  and .metadata.namespace == "kube-system" and .type == "bootstrap.kubernetes.io/token" and (has("stringData") | not)' \
  secret.json >/dev/null || fail "Secret header: $(jq -c '.[0] | del(.data)' secret.json)"; ok
sdata() { jq -r --arg k "$1" '.[0].data[$k] // empty' secret.json | base64 -d; }
[ "$(jq -r '.[0].data | keys | join(" ")' secret.json)" = "auth-extra-groups description expiration token-id token-secret usage-bootstrap-authentication usage-bootstrap-signing" ] \
  || fail "Secret data keys: $(jq -r '.[0].data | keys | join(" ")' secret.json)"; ok
[ "$(sdata token-id)" = "$id" ] || fail "token-id"; ok
[ "$(sdata token-secret)" = "$secret" ] || fail "token-secret"; ok
[ "$(sdata usage-bootstrap-authentication)" = true ] || fail "usage-bootstrap-authentication"; ok
[ "$(sdata usage-bootstrap-signing)" = true ] || fail "usage-bootstrap-signing"; ok
[ "$(sdata auth-extra-groups)" = "system:bootstrappers:kubeadm:default-node-token" ] || fail "auth-extra-groups"; ok
[ -n "$(sdata description)" ] || fail "no description"; ok
exp=$(sdata expiration)
[[ "$exp" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] || fail "expiration '$exp' is not RFC 3339 UTC"; ok
e=$(date -d "$exp" +%s)
[ "$e" -ge $((before + 86400)) ] && [ "$e" -le $((after + 86400)) ] || fail "expiration $exp is not now+24h"; ok

# The ledger records the token id, never the secret.
detail=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT detail FROM events WHERE kind = 'bootstrap-token-created'")
[[ "$detail" == *"token-id=$id "* ]] || fail "ledger event: '$detail'"; ok
! grep -a -q "$secret" "$HWCA_HOME/ledger.db" || fail "the secret is in the ledger"; ok

# A second token into the same folder: refused without --force, nothing changes; --force replaces all.
cp -a out out.before
expect_error "a token already there" "$HWCA" k8s bootstrap-token create --config cluster.yaml --out out
grep -q "token $id" "$T/.stderr" && grep -q -- "--force" "$T/.stderr" || fail "conflict message: $(cat "$T/.stderr")"; ok
diff -r out out.before >/dev/null || fail "a refused create changed the folder"; ok
"$HWCA" k8s bootstrap-token create --config cluster.yaml --out out --force > bt2.out 2>&1 || fail "--force: $(cat bt2.out)"
token2=$(cat out/bootstrap-token)
[ "$token2" != "$token" ] || fail "--force kept the token"; ok
for n in "${NODES[@]}"; do
  [ "$(kc "out/nodes/$n/bootstrap-kubelet.conf" '{.users[0].user.token}')" = "$token2" ] || fail "--force left $n's old token"; ok
  [ "$(mode "out/nodes/$n/bootstrap-kubelet.conf")" = 600 ] || fail "--force: mode"; ok
done
[ "$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT count(*) FROM events WHERE kind = 'bootstrap-token-created'")" = 2 ] || fail "ledger events"; ok
# Certificates k8s init wrote are untouched.
cmp -s out/nodes/w1/kubelet.conf out.before/nodes/w1/kubelet.conf || fail "kubelet.conf changed"; ok

# --ttl 0: never expires, so no expiration field; a separate --out with --pki.
"$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out --out never --ttl 0 > never.out || fail "--ttl 0"
grep -q "never expires" never.out || fail "--ttl 0 stdout: $(cat never.out)"; ok
as_json never/bootstrap-token-secret.yaml | jq -e '.[0].data | has("expiration") | not' >/dev/null || fail "--ttl 0 wrote an expiration"; ok
kc never/nodes/w2/bootstrap-kubelet.conf '{.clusters[0].cluster.certificate-authority-data}' | base64 -d | cmp -s - out/pki/ca.crt \
  || fail "--pki: CA"; ok
[ ! -e never/pki ] || fail "--out got a pki folder"; ok
before=$(date +%s)
"$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out/ --out short/ --ttl 1h30m > /dev/null || fail "--ttl 1h30m"
exp=$(as_json short/bootstrap-token-secret.yaml | jq -r '.[0].data.expiration' | base64 -d)
e=$(date -d "$exp" +%s)
[ "$e" -ge $((before + 5400)) ] && [ "$e" -le $(($(date +%s) + 5400)) ] || fail "--ttl 1h30m expiration $exp"; ok

# Bad input: one error line, nothing written.
mkdir empty badca
mkdir -p badca/pki && echo "not a certificate" > badca/pki/ca.crt
cp "$(ls out/pki/apiserver.crt)" leaf.crt && mkdir -p leafca/pki && cp leaf.crt leafca/pki/ca.crt
echo "controlPlane: [oops" > broken.yaml
touch plainfile
expect_error "--ttl not a duration" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out --out b1 --ttl 1d
expect_error "--ttl negative" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out --out b1 --ttl=-1h
grep -q "must not be negative" "$T/.stderr" || fail "--ttl=-1h message: $(cat "$T/.stderr")"; ok
expect_error "no --out" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out
expect_error "no --config" "$HWCA" k8s bootstrap-token create --pki out --out b1
expect_error "missing cluster file" "$HWCA" k8s bootstrap-token create --config nosuch.yaml --pki out --out b1
expect_error "malformed cluster file" "$HWCA" k8s bootstrap-token create --config broken.yaml --pki out --out b1
expect_error "no pki/ca.crt" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki empty --out b1
grep -q "pki/ca.crt: not found" "$T/.stderr" || fail "no-ca message: $(cat "$T/.stderr")"; ok
expect_error "garbage ca.crt" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki badca --out b1
expect_error "ca.crt not a CA" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki leafca --out b1
expect_error "--out parent missing" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out --out no/such/dir
expect_error "--out is a file" "$HWCA" k8s bootstrap-token create --config cluster.yaml --pki out --out plainfile
[ ! -e b1 ] && [ ! -e no ] && [ ! -s plainfile ] || fail "a refused create wrote something"; ok
[ -z "$(ls empty)" ] || fail "a refused create wrote into empty/"; ok
[ "$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT count(*) FROM events WHERE kind = 'bootstrap-token-created'")" = 4 ] \
  || fail "refused creates recorded events"; ok

# --- manifests. -------------------------------------------------------------------------------------
"$HWCA" k8s manifests --out m > m.out 2> m.err || fail "manifests: $(cat m.err)"
[ "$(cat m.out)" = "$(printf 'm/hwca-signer-rbac.yaml\nm/node-bootstrap-rbac.yaml')" ] || fail "manifests stdout: $(cat m.out)"; ok
for f in m/hwca-signer-rbac.yaml m/node-bootstrap-rbac.yaml; do
  [ "$(mode "$f")" = 644 ] || fail "$f mode"; ok
done
as_json m/hwca-signer-rbac.yaml > signer.json
as_json m/node-bootstrap-rbac.yaml > nodes.json
# binding JSON INDEX NAME ROLE KIND SUBJECT
binding() {
  jq -e --argjson i "$2" --arg name "$3" --arg role "$4" --arg kind "$5" --arg subj "$6" '.[$i] |
    .apiVersion == "rbac.authorization.k8s.io/v1" and .kind == "ClusterRoleBinding" and .metadata.name == $name
    and .roleRef == {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: $role}
    and .subjects == [{apiGroup: "rbac.authorization.k8s.io", kind: $kind, name: $subj}]' "$1" >/dev/null \
    || fail "$1[$2]: $(jq -c --argjson i "$2" '.[$i]' "$1")"
  ok
}
SIGNERS='["kubernetes.io/kube-apiserver-client-kubelet","kubernetes.io/kubelet-serving","kubernetes.io/kube-apiserver-client"]'
[ "$(jq length signer.json)" = 2 ] || fail "signer file: $(jq length signer.json) objects"; ok
jq -e --argjson names "$SIGNERS" '.[0] | .apiVersion == "rbac.authorization.k8s.io/v1" and .kind == "ClusterRole"
  and .metadata.name == "hwca:k8s-signer" and .rules == [
    {apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests"], verbs: ["get", "list", "watch"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests/status"], verbs: ["update"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["signers"], resourceNames: $names, verbs: ["sign"]}]' signer.json >/dev/null \
  || fail "signer ClusterRole: $(jq -c '.[0]' signer.json)"; ok
binding signer.json 1 hwca:k8s-signer hwca:k8s-signer User system:hwca-signer
P=system:certificates.k8s.io:certificatesigningrequests
[ "$(jq length nodes.json)" = 5 ] || fail "node file: $(jq length nodes.json) objects"; ok
jq -e --arg name "$P:selfnodeserver" '.[0] | .apiVersion == "rbac.authorization.k8s.io/v1" and .kind == "ClusterRole"
  and .metadata.name == $name and .rules == [{apiGroups: ["certificates.k8s.io"],
  resources: ["certificatesigningrequests/selfnodeserver"], verbs: ["create"]}]' nodes.json >/dev/null \
  || fail "selfnodeserver ClusterRole: $(jq -c '.[0]' nodes.json)"; ok
binding nodes.json 1 create-csrs-for-bootstrapping system:node-bootstrapper Group system:bootstrappers
binding nodes.json 2 node-client-auto-approve-csr "$P:nodeclient" Group system:bootstrappers
binding nodes.json 3 node-client-auto-renew-crt "$P:selfnodeclient" Group system:nodes
binding nodes.json 4 node-server-auto-renew-crt "$P:selfnodeserver" Group system:nodes

# --approve, chosen signer names and user; rerunning over the same folder replaces the files.
"$HWCA" k8s manifests --out m --approve --signer-names kubernetes.io/kubelet-serving,kubernetes.io/kube-apiserver-client-kubelet \
  --signer-user system:serviceaccount:kube-system:hwca-signer > /dev/null || fail "manifests --approve"
as_json m/hwca-signer-rbac.yaml > signer2.json
jq -e '.[0].rules == [
    {apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests"], verbs: ["get", "list", "watch"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests/status"], verbs: ["update"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["signers"],
     resourceNames: ["kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"], verbs: ["sign"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests/approval"], verbs: ["update"]},
    {apiGroups: ["certificates.k8s.io"], resources: ["signers"],
     resourceNames: ["kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"], verbs: ["approve"]}]' \
  signer2.json >/dev/null || fail "--approve rules: $(jq -c '.[0].rules' signer2.json)"; ok
binding signer2.json 1 hwca:k8s-signer hwca:k8s-signer User system:serviceaccount:kube-system:hwca-signer

cp -a m m.before
expect_error "a signer hwca cannot sign" "$HWCA" k8s manifests --out m --signer-names kubernetes.io/kubelet-serving,example.com/mine
grep -q "example.com/mine' is not a signer hwca can sign" "$T/.stderr" || fail "signer message: $(cat "$T/.stderr")"; ok
expect_error "legacy-unknown" "$HWCA" k8s manifests --out m2 --signer-names kubernetes.io/legacy-unknown
expect_error "empty signer names" "$HWCA" k8s manifests --out m2 --signer-names ""
grep -q "no signer name given" "$T/.stderr" || fail "empty --signer-names message: $(cat "$T/.stderr")"; ok
expect_error "empty signer user" "$HWCA" k8s manifests --out m2 --signer-user ""
expect_error "manifests --out parent missing" "$HWCA" k8s manifests --out no/such/m
expect_error "manifests --out is a file" "$HWCA" k8s manifests --out plainfile
expect_error "manifests no --out" "$HWCA" k8s manifests
diff -r m m.before >/dev/null && [ ! -e m2 ] && [ ! -e no ] && [ ! -s plainfile ] || fail "a refused manifests wrote something"; ok

# --- Against the kube-apiserver stand-in (lib-kube.bash): the manifests and the Secret apply, and the
# bootstrap kubeconfig, whole and unmodified, authenticates as system:bootstrap:<id>. Its CA and
# endpoint are the stand-in's: a --pki folder holding the stand-in's CA as pki/ca.crt and a cluster
# file whose controlPlaneEndpoint is the stand-in's port.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-kube.bash"
standin_start
port=${STANDIN_URL##*:}
mkdir -p kpki/pki && cp "$STANDIN_DIR/ca.crt" kpki/pki/ca.crt
sed "s/^name: kubernetes\$/name: kubernetes\ncontrolPlaneEndpoint: 127.0.0.1:$port/" cluster.yaml > cluster-standin.yaml
grep -q "^controlPlaneEndpoint: 127.0.0.1:$port\$" cluster-standin.yaml || fail "cluster-standin.yaml"
"$HWCA" k8s bootstrap-token create --config cluster-standin.yaml --pki kpki --out kbt > kbt.out || fail "create for the stand-in"
ktoken=$(cat kbt/bootstrap-token)
kid=${ktoken%%.*}
KCONF=kbt/nodes/w1/bootstrap-kubelet.conf
[ "$(kc "$KCONF" '{.clusters[0].cluster.server}')" = "$STANDIN_URL" ] || fail "stand-in kubeconfig server"; ok
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout w1.key -subj "/O=system:nodes/CN=system:node:w1" \
  -out w1.csr 2>/dev/null || fail "openssl req"
standin_csr_yaml node-csr-w1 kubernetes.io/kube-apiserver-client-kubelet "digital signature,client auth" "" w1.csr > csr.yaml
# Before its Secret is in the cluster the token is nobody.
! standin_kubectl "$KCONF" create --validate=false -f csr.yaml > pre.out 2>&1 || fail "an unknown token created a CSR"; ok
grep -q -i -E "unauthorized|provide credentials" pre.out || fail "unknown token: $(cat pre.out)"; ok
standin_kubectl "$KUBECONFIG" apply --validate=false -f m/ > apply.out 2>&1 || fail "kubectl apply manifests: $(cat apply.out)"; ok
standin_kubectl "$KUBECONFIG" apply --validate=false -f kbt/bootstrap-token-secret.yaml >> apply.out 2>&1 \
  || fail "kubectl apply Secret: $(cat apply.out)"; ok
standin_kubectl "$KUBECONFIG" get clusterrole hwca:k8s-signer -o json > role.json || fail "get clusterrole"
jq -e '.rules | length == 5' role.json >/dev/null || fail "stored signer role: $(jq -c .rules role.json)"; ok
for b in create-csrs-for-bootstrapping node-client-auto-approve-csr node-client-auto-renew-crt node-server-auto-renew-crt hwca:k8s-signer; do
  standin_kubectl "$KUBECONFIG" get clusterrolebinding "$b" -o json > crb.json || fail "get clusterrolebinding $b"
  jq -e '.roleRef.kind == "ClusterRole" and (.subjects | length == 1)' crb.json >/dev/null || fail "stored $b: $(cat crb.json)"; ok
done
standin_kubectl "$KUBECONFIG" get secret -n kube-system "bootstrap-token-$kid" -o json > sec.json || fail "get secret"
[ "$(jq -r '.type' sec.json)" = bootstrap.kubernetes.io/token ] && [ "$(jq -r '.data["token-id"]' sec.json | base64 -d)" = "$kid" ] \
  || fail "stored Secret: $(jq -c 'del(.data)' sec.json)"; ok
standin_kubectl "$KCONF" create --validate=false -f csr.yaml > create.out 2>&1 || fail "bootstrap kubeconfig create CSR: $(cat create.out)"; ok
standin_kubectl "$KUBECONFIG" get csr node-csr-w1 -o json > csr.json || fail "get csr"
[ "$(jq -r .spec.username csr.json)" = "system:bootstrap:$kid" ] || fail "CSR username $(jq -r .spec.username csr.json)"; ok
jq -e '.spec.groups | index("system:bootstrappers") and index("system:bootstrappers:kubeadm:default-node-token")' csr.json >/dev/null \
  || fail "CSR groups $(jq -c .spec.groups csr.json)"; ok
standin_stop

finish
