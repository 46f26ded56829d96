#!/usr/bin/env bash
# The kube-apiserver TEST STAND-IN (softhsm-tests/support/kube_apiserver_standin.py) behaves like
# kube-apiserver for what hwca's CSR signer tests use, checked with the machine's real kubectl and
# with curl doing what a signer does:
#  - authentication: client certificate (CN/O), static token file, bootstrap token (a Secret in
#    kube-system, as kubeadm writes it; wrong or expired -> 401), none -> 401;
#  - CSRs: create (spec.username/groups from the identity, whatever the client sent), list
#    (Pending), `kubectl certificate approve`, /status certificate write read back by kubectl,
#    a different second certificate -> 422, a stale resourceVersion -> 409, validation -> 422,
#    bad JSON -> 400;
#  - watch: kubectl get --watch and a curl watch see ADDED/MODIFIED; drop-watches ends them;
#    after compact an old resourceVersion gets 410 (in-stream ERROR event, or HTTP 410 with
#    --expired-watch http);
#  - kubectl apply of a ClusterRole, ClusterRoleBinding and Secret, twice;
#  - the request log and the per-CSR certificate write counts of /standin/stats;
#  - a second stand-in reporting v1.33.0 (the kubectl dispatcher then runs a kubectl that sends
#    `certificate approve` as protobuf); SIGTERM -> exit 0.
# It does not need hwca.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/lib-kube.bash"

command -v kubectl >/dev/null || fail "kubectl is not installed"
command -v jq >/dev/null || fail "jq is not installed"

# A static token, read by the stand-in at start.
standin_add_token tok-0123456789 token-user 1001 "team-x,team-y"
standin_start
ok

CSRS=/apis/certificates.k8s.io/v1/certificatesigningrequests

# http WHO METHOD PATH [BODY-FILE]: prints the HTTP code, body in $T/resp.json.
http() {
  local who=$1 method=$2 path=$3 body=${4:-}
  local args=(-o "$T/resp.json" -w '%{http_code}' -X "$method")
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data-binary "@$body")
  standin_curl "$who" "$path" "${args[@]}"
}
# status_is CODE REASON DESC: $T/resp.json is a Status with that code and reason; $got is CODE. One check.
status_is() {
  [ "$got" = "$1" ] || fail "$3: HTTP $got, want $1: $(cat "$T/resp.json")"
  jq -e --argjson c "$1" --arg r "$2" '.kind == "Status" and .code == $c and .reason == $r' "$T/resp.json" >/dev/null ||
    fail "$3: not a Status $1 $2: $(cat "$T/resp.json")"
  ok
}

# --- no credentials, bad credentials -> 401 --------------------------------------------------
got=$(http none GET "$CSRS")
status_is 401 Unauthorized "no credentials"
got=$(http token:not-a-token GET "$CSRS")
status_is 401 Unauthorized "unknown bearer token"
noauth=$(standin_token_conf nobody wrong-token)
rc=0; standin_kubectl "$noauth" get csr > /dev/null 2> kubectl.err || rc=$?
[ "$rc" -ne 0 ] && grep -q "You must be logged in to the server" kubectl.err || fail "kubectl with a wrong token: rc $rc, $(cat kubectl.err)"
ok

# --- create: spec.username/groups come from the identity --------------------------------------
alice=$(standin_client_conf alice alice team-a team-b)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout w1.key \
  -subj "/O=system:nodes/CN=system:node:w1" -out w1.csr 2>/dev/null || fail "openssl req"
{
  standin_csr_yaml csr-w1 example.com/hwca "digital signature,client auth" 3600 w1.csr
  # What the client claims is replaced by the server, as kube-apiserver does.
  printf '  username: mallory\n  groups:\n  - system:masters\n'
} > csr-w1.yaml
out=$(standin_kubectl "$alice" create --validate=false -f csr-w1.yaml) || fail "kubectl create csr failed"
[ "$out" = "certificatesigningrequest.certificates.k8s.io/csr-w1 created" ] || fail "kubectl create said: $out"
ok
who=$(standin_kubectl "$KUBECONFIG" get csr csr-w1 -o jsonpath='{.spec.username}|{.spec.groups}')
[ "$who" = 'alice|["team-a","team-b","system:authenticated"]' ] || fail "spec.username/groups: $who"
ok
line=$(standin_kubectl "$KUBECONFIG" get csr --no-headers | grep '^csr-w1 ') || fail "kubectl get csr does not list csr-w1"
[[ "$line" =~ ^csr-w1\ +[0-9]+s\ +example.com/hwca\ +alice\ +60m\ +Pending$ ]] || fail "kubectl get csr: $line"
ok

# --- kubectl certificate approve ----------------------------------------------------------------
out=$(standin_kubectl "$KUBECONFIG" certificate approve csr-w1) || fail "kubectl certificate approve failed"
[ "$out" = "certificatesigningrequest.certificates.k8s.io/csr-w1 approved" ] || fail "approve said: $out"
cond=$(standin_kubectl "$KUBECONFIG" get csr csr-w1 -o jsonpath='{.status.conditions[0].type}/{.status.conditions[0].status}/{.status.conditions[0].reason}')
[ "$cond" = "Approved/True/KubectlApprove" ] || fail "condition after approve: $cond"
ok
standin_kubectl "$KUBECONFIG" get csr csr-w1 --no-headers | grep -Eq ' Approved$' || fail "kubectl get csr does not show Approved"
ok

# --- the signer's write of status.certificate ---------------------------------------------------
signer=$(standin_client_conf signer hwca-signer)
[ -f "$signer" ] || fail "no kubeconfig for the signer"
issue() {  # issue OUT: a certificate for w1.csr from the test CA (any CA does for the API server)
  printf 'extendedKeyUsage=clientAuth\n' > issue.ext
  openssl x509 -req -in w1.csr -CA "$STANDIN_DIR/ca.crt" -CAkey "$STANDIN_DIR/ca.key" -days 1 \
    -set_serial "0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" -extfile issue.ext -out "$1" 2>/dev/null ||
    fail "openssl x509 -req"
}
issue cert1.pem
issue cert2.pem
standin_curl signer "$CSRS/csr-w1" -f > before.json || fail "GET csr-w1 as the signer"
uid=$(jq -r .metadata.uid before.json)
jq --arg c "$(base64 -w0 < cert1.pem)" '.status.certificate = $c' before.json > put1.json
got=$(http signer PUT "$CSRS/csr-w1/status" put1.json)
[ "$got" = 200 ] || fail "PUT /status: HTTP $got: $(cat resp.json)"
jq -e '.status.conditions[0].type == "Approved" and (.metadata.resourceVersion | tonumber) > 0' resp.json >/dev/null ||
  fail "PUT /status answer: $(cat resp.json)"
ok
standin_kubectl "$KUBECONFIG" get csr csr-w1 -o jsonpath='{.status.certificate}' | base64 -d > got.pem
cmp -s got.pem cert1.pem || fail "the certificate kubectl reads back differs from the one written"
ok
standin_kubectl "$KUBECONFIG" get csr csr-w1 --no-headers | grep -Eq ' Approved,Issued$' || fail "kubectl get csr does not show Approved,Issued"
ok
# A second, different certificate on the current resourceVersion: 422 (immutable once set).
standin_curl signer "$CSRS/csr-w1" -f > now.json || fail "GET csr-w1"
jq --arg c "$(base64 -w0 < cert2.pem)" '.status.certificate = $c' now.json > put2.json
got=$(http signer PUT "$CSRS/csr-w1/status" put2.json)
status_is 422 Invalid "second certificate"
grep -q 'updates may not modify existing certificate content' resp.json || fail "422 message: $(cat resp.json)"
ok
# A stale resourceVersion: 409 Conflict.
got=$(http signer PUT "$CSRS/csr-w1/status" put1.json)
status_is 409 Conflict "stale resourceVersion"
grep -q 'the object has been modified' resp.json || fail "409 message: $(cat resp.json)"
ok
# /status may not touch the spec or the Approved condition; /approval may not touch the certificate.
jq '.spec.signerName = "evil.example/x" | .status.conditions = [] | .metadata.resourceVersion = ""' now.json > put3.json
got=$(http signer PUT "$CSRS/csr-w1/status" put3.json)
[ "$got" = 200 ] || fail "PUT /status without conditions: HTTP $got: $(cat resp.json)"
jq -e '.spec.signerName == "example.com/hwca" and .status.conditions[0].type == "Approved"' resp.json >/dev/null ||
  fail "/status changed the spec or dropped Approved: $(cat resp.json)"
ok
jq '.status.certificate = ""' now.json | jq '.metadata.resourceVersion = ""' > put4.json
got=$(http admin PUT "$CSRS/csr-w1/approval" put4.json)
[ "$got" = 200 ] && jq -e '.status.certificate != null and .status.certificate != ""' resp.json >/dev/null ||
  fail "/approval removed the certificate: HTTP $got $(cat resp.json)"
ok

# --- validation and bad input -----------------------------------------------------------------
standin_csr_yaml csr-short example.com/hwca "client auth" 599 w1.csr > short.yaml
rc=0; standin_kubectl "$KUBECONFIG" create --validate=false -f short.yaml > /dev/null 2> kubectl.err || rc=$?
[ "$rc" -ne 0 ] && grep -q 'may not specify a duration less than 600 seconds' kubectl.err ||
  fail "expirationSeconds 599 accepted or wrong error: $(cat kubectl.err)"
ok
printf '{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"name":"bad"},"spec":{"request":"%s","signerName":"example.com/hwca","usages":["client auth","bogus usage"]}}' \
  "$(printf 'not a CSR' | base64 -w0)" > bad.json
got=$(http admin POST "$CSRS" bad.json)
status_is 422 Invalid "bad CSR object"
jq -e '[.details.causes[].field] | index("spec.request") != null and index("spec.usages[1]") != null' resp.json >/dev/null ||
  fail "422 causes: $(cat resp.json)"
ok
printf '{"apiVersion": "certificates.k8s.io/v1", "kind": ' > trunc.json
got=$(http admin POST "$CSRS" trunc.json)
status_is 400 BadRequest "truncated JSON"
got=$(http admin GET "$CSRS/no-such-csr")
status_is 404 NotFound "missing CSR"

# --- bootstrap tokens and the static token file --------------------------------------------------
{
  standin_bootstrap_secret abcdef 0123456789abcdef system:bootstrappers:kubeadm:default-node-token
  printf -- '---\n'
  standin_bootstrap_secret 012345 0123456789abcdef "" 2000-01-01T00:00:00Z
} > tokens.yaml
standin_kubectl "$KUBECONFIG" apply --validate=false -f tokens.yaml > /dev/null || fail "kubectl apply of the token Secrets"
boot=$(standin_token_conf boot abcdef.0123456789abcdef)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
  -subj "/O=system:nodes/CN=system:node:w2" -out w2.csr 2>/dev/null || fail "openssl req"
standin_csr_yaml node-csr-w2 kubernetes.io/kube-apiserver-client-kubelet "digital signature,client auth" "" w2.csr > w2.yaml
standin_kubectl "$boot" create --validate=false -f w2.yaml > /dev/null || fail "create as a bootstrap token"
who=$(standin_kubectl "$KUBECONFIG" get csr node-csr-w2 -o jsonpath='{.spec.username}|{.spec.groups}')
[ "$who" = 'system:bootstrap:abcdef|["system:bootstrappers","system:bootstrappers:kubeadm:default-node-token","system:authenticated"]' ] ||
  fail "bootstrap token identity: $who"
ok
got=$(http token:abcdef.0123456789abcdee GET "$CSRS")
status_is 401 Unauthorized "bootstrap token with a wrong secret"
got=$(http token:012345.0123456789abcdef GET "$CSRS")
status_is 401 Unauthorized "expired bootstrap token"
tok=$(standin_token_conf tokuser tok-0123456789)
standin_csr_yaml csr-tok example.com/hwca "client auth" "" w2.csr | standin_kubectl "$tok" create --validate=false -f - > /dev/null ||
  fail "create with a static token"
who=$(standin_kubectl "$KUBECONFIG" get csr csr-tok -o jsonpath='{.spec.username}|{.spec.uid}|{.spec.groups}')
[ "$who" = 'token-user|1001|["team-x","team-y","system:authenticated"]' ] || fail "token file identity: $who"
ok

# --- kubectl apply of RBAC objects and a Secret, twice -------------------------------------------
cat > rbac.yaml <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: hwca:signer
rules:
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests/status"]
  verbs: ["update"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["signers"]
  resourceNames: ["example.com/hwca"]
  verbs: ["sign"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: hwca:signer
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: hwca:signer
subjects:
- kind: User
  name: hwca-signer
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: v1
kind: Secret
metadata:
  name: hwca-signer-config
  namespace: kube-system
stringData:
  signer: example.com/hwca
EOF
out=$(standin_kubectl "$KUBECONFIG" apply --validate=false -f rbac.yaml) || fail "first kubectl apply failed"
[ "$(grep -c ' created$' <<< "$out")" = 3 ] || fail "first apply: $out"
ok
out=$(standin_kubectl "$KUBECONFIG" apply --validate=false -f rbac.yaml) || fail "second kubectl apply failed"
grep -Eq '^clusterrole.rbac.authorization.k8s.io/hwca:signer unchanged$' <<< "$out" &&
  grep -Eq '^clusterrolebinding.rbac.authorization.k8s.io/hwca:signer unchanged$' <<< "$out" &&
  grep -Eq '^secret/hwca-signer-config (unchanged|configured)$' <<< "$out" || fail "second apply: $out"
ok
sed -i 's/verbs: \["get", "list", "watch"\]/verbs: ["get", "list"]/' rbac.yaml
out=$(standin_kubectl "$KUBECONFIG" apply --validate=false -f rbac.yaml) || fail "third kubectl apply failed"
grep -q '^clusterrole.rbac.authorization.k8s.io/hwca:signer configured$' <<< "$out" || fail "changed apply: $out"
[ "$(standin_kubectl "$KUBECONFIG" get clusterrole hwca:signer -o jsonpath='{.rules[0].verbs}')" = '["get","list"]' ] ||
  fail "the patched ClusterRole was not stored"
ok
[ "$(standin_kubectl "$KUBECONFIG" get secret -n kube-system hwca-signer-config -o jsonpath='{.data.signer}' | base64 -d)" = example.com/hwca ] ||
  fail "the Secret's stringData did not become data"
standin_kubectl "$KUBECONFIG" get clusterrolebinding hwca:signer --no-headers | grep -Eq '^hwca:signer +ClusterRole/hwca:signer ' ||
  fail "kubectl get clusterrolebinding"
ok

# --- watch ------------------------------------------------------------------------------------
standin_curl admin "$CSRS" -f > list.json || fail "list CSRs"
rv0=$(jq -r .metadata.resourceVersion list.json)
[ "$(jq '.items | length' list.json)" = 3 ] || fail "list: $(jq -c '[.items[].metadata.name]' list.json)"
ok
standin_curl signer "$CSRS?watch=true&resourceVersion=$rv0&allowWatchBookmarks=true" -N --max-time 50 > watch.out 2> watch.err &
curl_watch=$!
_bg_pids+=("$curl_watch")
timeout 50 kubectl get csr --watch --output-watch-events > kwatch.out 2> kwatch.err &
kubectl_watch=$!
_bg_pids+=("$kubectl_watch")
# Both watches are open before the changes they must see.
for i in $(seq 1 100); do
  [ "$(standin_stats | jq .openWatches)" = 2 ] && [ -s kwatch.out ] && break
  sleep 0.1
done
[ "$(standin_stats | jq .openWatches)" = 2 ] || fail "the two watches did not open: $(cat watch.err kwatch.err)"
ok
standin_csr_yaml csr-w3 example.com/hwca "client auth" "" w2.csr | standin_kubectl "$alice" create --validate=false -f - > /dev/null ||
  fail "create csr-w3"
standin_kubectl "$KUBECONFIG" certificate approve csr-w3 > /dev/null || fail "approve csr-w3"
for i in $(seq 1 100); do
  grep -q '"type":"MODIFIED","object":{"kind":"CertificateSigningRequest".*"name":"csr-w3"' watch.out &&
    grep -Eq '^MODIFIED +csr-w3 .* Approved$' kwatch.out && break
  sleep 0.1
done
jq -e -s --arg rv "$rv0" 'map(select(.object.metadata.name == "csr-w3")) | map(.type) == ["ADDED", "MODIFIED"]
  and (map(.object.metadata.resourceVersion | tonumber) | all(. > ($rv | tonumber)))' watch.out >/dev/null ||
  fail "curl watch events: $(cut -c1-200 watch.out)"
ok
grep -Eq '^ADDED +csr-w3 .* Pending$' kwatch.out && grep -Eq '^MODIFIED +csr-w3 .* Approved$' kwatch.out ||
  fail "kubectl get csr --watch saw: $(cat kwatch.out)"
ok
# drop-watches resets both connections: curl sees the stream cut (no closing chunk).
[ "$(standin_drop_watches | jq .dropped)" = 2 ] || fail "drop-watches did not count 2 watches"
rc=0
for i in $(seq 1 100); do kill -0 "$curl_watch" 2>/dev/null || break; sleep 0.1; done
kill -0 "$curl_watch" 2>/dev/null && fail "the curl watch still runs after drop-watches"
wait "$curl_watch" || rc=$?
[ "$rc" = 18 ] || [ "$rc" = 56 ] || fail "curl watch ended with $rc after drop-watches (want 18 or 56): $(cat watch.err)"
ok
for i in $(seq 1 100); do kill -0 "$kubectl_watch" 2>/dev/null || break; sleep 0.1; done
kill -0 "$kubectl_watch" 2>/dev/null && fail "kubectl get --watch still runs after drop-watches"
for i in $(seq 1 50); do [ "$(standin_stats | jq .openWatches)" = 0 ] && break; sleep 0.1; done
[ "$(standin_stats | jq .openWatches)" = 0 ] || fail "open watches after drop-watches: $(standin_stats | jq .openWatches)"
ok

# After compact, a watch from an old resourceVersion expires: HTTP 200, then one ERROR event with
# Status 410 Expired (kube-apiserver's watch cache), then the end of the stream.
standin_compact > compact.json
rv_now=$(jq -r .compactedTo compact.json)
standin_curl signer "$CSRS?watch=true&resourceVersion=$rv0" -N --max-time 10 -w '%{http_code}' -o expired.out > expired.code ||
  fail "expired watch: curl failed"
[ "$(cat expired.code)" = 200 ] || fail "expired watch: HTTP $(cat expired.code)"
jq -e -s 'length == 1 and .[0].type == "ERROR" and .[0].object.kind == "Status" and .[0].object.code == 410
  and .[0].object.reason == "Expired"' expired.out >/dev/null || fail "expired watch: $(cat expired.out)"
ok
# A watch from the compacted revision itself still works and sees the next change only.
standin_curl signer "$CSRS?watch=true&resourceVersion=$rv_now&timeoutSeconds=3" -N --max-time 10 > fresh.out 2>&1 &
fresh=$!
_bg_pids+=("$fresh")
for i in $(seq 1 100); do [ "$(standin_stats | jq .openWatches)" = 1 ] && break; sleep 0.1; done
standin_kubectl "$KUBECONFIG" delete csr csr-tok > /dev/null || fail "kubectl delete csr"
wait "$fresh" || fail "the timeoutSeconds=3 watch did not end cleanly: $(cat fresh.out)"
jq -e -s 'map(select(.type != "BOOKMARK")) | length == 1 and .[0].type == "DELETED" and .[0].object.metadata.name == "csr-tok"' fresh.out >/dev/null ||
  fail "watch from the compacted revision: $(cut -c1-200 fresh.out)"
ok

# --- the stats: who did what, and one certificate write ------------------------------------------
standin_stats > stats.json
jq -e --arg uid "$uid" '.csrs[$uid] | .name == "csr-w1" and .certificateWrites == 1 and .certificateWriters == ["hwca-signer"]
  and ([.certificateWriteAttempts[] | [.code, .sameAsStored]] == [[200, false], [422, false], [409, true], [200, true]])' stats.json >/dev/null ||
  fail "certificate write stats: $(jq -c --arg uid "$uid" '.csrs[$uid]' stats.json)"
ok
has_request() {  # has_request USER VERB RESOURCE SUBRESOURCE CODE
  jq -e --arg u "$1" --arg v "$2" --arg r "$3" --arg s "$4" --argjson c "$5" \
    'any(.requests[]; .user == $u and .verb == $v and .resource == $r and .subresource == $s and .code == $c)' stats.json >/dev/null ||
    fail "no request ($*) in the stand-in's log"
  ok
}
has_request alice create certificatesigningrequests "" 201
has_request kubernetes-admin update certificatesigningrequests approval 200
has_request hwca-signer update certificatesigningrequests status 200
has_request hwca-signer update certificatesigningrequests status 422
has_request hwca-signer watch certificatesigningrequests "" 200
has_request system:bootstrap:abcdef create certificatesigningrequests "" 201
has_request kubernetes-admin patch clusterroles "" 200
jq -e 'any(.requests[]; .user == null and .code == 401)' stats.json >/dev/null || fail "the 401s are not in the log"
ok
# The hooks are for the admin only.
got=$(http signer GET /standin/stats)
status_is 403 Forbidden "stats as the signer"

# --- a second stand-in reporting v1.33.0, with --expired-watch http -----------------------------
# /usr/bin/kubectl may be a dispatcher that runs the kubectl matching the server's minor version;
# kubectl >= 1.32 sends `certificate approve` as protobuf, which the stand-in decodes.
start_bg "$STANDIN_PYTHON" "$STANDIN_PY" --port-file "$STANDIN_DIR/port2" --tls-cert-file "$STANDIN_DIR/server.crt" \
  --tls-private-key-file "$STANDIN_DIR/server.key" --client-ca-file "$STANDIN_DIR/ca.crt" --git-version v1.33.0 \
  --expired-watch http 2> "$STANDIN_DIR/standin2.log"
pid2=$!
for i in $(seq 1 300); do [ -s "$STANDIN_DIR/port2" ] && break; sleep 0.1; done
[ -s "$STANDIN_DIR/port2" ] || fail "the second stand-in did not start: $(cat "$STANDIN_DIR/standin2.log")"
url2="https://127.0.0.1:$(tr -d '\n' < "$STANDIN_DIR/port2")"
sed "s|server: $STANDIN_URL|server: $url2|" "$KUBECONFIG" > admin2.conf
for i in $(seq 1 100); do standin_kubectl admin2.conf get --raw /version > version2.json 2>/dev/null && break; sleep 0.1; done
[ "$(jq -r .gitVersion version2.json)" = v1.33.0 ] || fail "second stand-in /version: $(cat version2.json)"
standin_kubectl admin2.conf create --validate=false -f csr-w1.yaml > /dev/null || fail "create on the second stand-in"
standin_kubectl admin2.conf certificate approve csr-w1 > /dev/null || fail "approve on the second stand-in"
[ "$(standin_kubectl admin2.conf get csr csr-w1 -o jsonpath='{.status.conditions[0].type}')" = Approved ] ||
  fail "approve on the second stand-in did not stick"
ok
minor=$(standin_kubectl admin2.conf version -o json | jq -r .clientVersion.minor | tr -dc 0-9)
ctype=$(STANDIN_URL=$url2 standin_stats | jq -r 'first(.requests[] | select(.subresource == "approval")) | .contentType')
if [ "$minor" -ge 32 ]; then want=application/vnd.kubernetes.protobuf; else want=application/json; fi
[ "$ctype" = "$want" ] || fail "kubectl 1.$minor sent the approval as '$ctype', want $want"
ok
echo "k8s_standin: kubectl 1.$minor sent certificate approve as $ctype" >&2
STANDIN_URL=$url2 standin_compact > /dev/null
got=$(STANDIN_URL=$url2 http admin GET "$CSRS?watch=true&resourceVersion=1")
status_is 410 Expired "expired watch with --expired-watch http"

# Nothing above made the stand-in fail internally.
if grep -q 'internal error' "$STANDIN_DIR/standin.log" "$STANDIN_DIR/standin2.log"; then
  fail "the stand-in logged an internal error: $(cat "$STANDIN_DIR/standin.log" "$STANDIN_DIR/standin2.log")"
fi
ok

# --- SIGTERM -------------------------------------------------------------------------------------
standin_stop
STANDIN_PID=$pid2 standin_stop
finish
