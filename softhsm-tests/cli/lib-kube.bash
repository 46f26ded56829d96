# Helpers for tests that need a Kubernetes API server: they run the TEST STAND-IN for kube-apiserver
# (softhsm-tests/support/kube_apiserver_standin.py, whose header says where it is not exact), driven
# by the machine's real kubectl. Source after lib.bash. Everything lives in $T/kube; the stand-in is
# started with start_bg, so lib.bash stops it on exit.
#
#   standin_add_token TOKEN USER UID [GROUPS]  a static token (before standin_start)
#   standin_start [STAND-IN ARGS...]           CA, certificates, admin.conf; starts and waits for it
#   standin_client_conf NAME CN [O...]         kubeconfig with a client certificate -> prints its path
#   standin_token_conf NAME TOKEN              kubeconfig with a bearer token -> prints its path
#   standin_kubectl CONF ARGS...               kubectl with that kubeconfig, bounded in time
#   standin_curl WHO PATH [CURL ARGS...]       curl to $STANDIN_URL$PATH as WHO: admin, NAME (from
#                                              standin_client_conf), token:TOKEN or none
#   standin_drop_watches / standin_compact / standin_stats   the admin hooks (JSON on stdout)
#   standin_csr_yaml NAME SIGNER USAGES EXPIRATION CSR-FILE   a CertificateSigningRequest object
#   standin_bootstrap_secret ID SECRET [EXTRA-GROUPS] [EXPIRATION]  a bootstrap token Secret
#   standin_stop                               SIGTERM; must exit 0 (one check)

STANDIN_PY="$HWCA_SOURCE_DIR/softhsm-tests/support/kube_apiserver_standin.py"
# Debian's interpreter: the stand-in needs python3-cryptography, python3-yaml and python3-protobuf.
STANDIN_PYTHON=${STANDIN_PYTHON:-/usr/bin/python3}
# The server version the stand-in reports. /usr/bin/kubectl may be a dispatcher that runs the kubectl
# matching the server's minor version; 1.31 sends JSON everywhere (1.32+ sends `certificate approve`
# as protobuf, which the stand-in also decodes).
STANDIN_VERSION=${STANDIN_VERSION:-v1.31.0}
STANDIN_DIR="$T/kube"

# _standin_subj CN [O...]: an openssl -subj string (O first, CN last, as kubeadm's certificates).
_standin_subj() {
  local cn=$1 s="" o
  shift
  for o in "$@"; do s+="/O=${o//\//\\/}"; done
  printf '%s/CN=%s' "$s" "${cn//\//\\/}"
}

# _standin_cert NAME SUBJ EXT: $STANDIN_DIR/NAME.key and NAME.crt (P-256), signed by the test CA.
_standin_cert() {
  local name=$1 subj=$2 ext=$3
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$STANDIN_DIR/$name.key" \
    -subj "$subj" -out "$STANDIN_DIR/$name.csr" 2>/dev/null || fail "openssl req for $name failed"
  printf '%s\n' "$ext" > "$STANDIN_DIR/$name.ext"
  openssl x509 -req -in "$STANDIN_DIR/$name.csr" -CA "$STANDIN_DIR/ca.crt" -CAkey "$STANDIN_DIR/ca.key" \
    -set_serial "0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" -days 2 -extfile "$STANDIN_DIR/$name.ext" \
    -out "$STANDIN_DIR/$name.crt" 2>/dev/null || fail "openssl x509 for $name failed"
  chmod 600 "$STANDIN_DIR/$name.key"
}

# _standin_kubeconfig FILE USER-NAME USER-LINES...: a kubeconfig (kubeadm's layout) for the stand-in.
_standin_kubeconfig() {
  local file=$1 user=$2
  shift 2
  {
    printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n'
    printf '    server: %s\n    certificate-authority-data: %s\n' "$STANDIN_URL" "$(base64 -w0 < "$STANDIN_DIR/ca.crt")"
    printf 'users:\n- name: "%s"\n  user:\n' "$user"
    printf '    %s\n' "$@"
    printf 'contexts:\n- name: "%s@standin"\n  context:\n    cluster: standin\n    user: "%s"\n' "$user" "$user"
    printf 'current-context: "%s@standin"\npreferences: {}\n' "$user"
  } > "$file"
  chmod 600 "$file"
}

# standin_add_token TOKEN USER UID [GROUPS]: a line of the --token-auth-file (GROUPS comma-separated).
standin_add_token() {
  mkdir -p "$STANDIN_DIR"
  printf '%s,%s,%s,"%s"\n' "$1" "$2" "$3" "${4:-}" >> "$STANDIN_DIR/tokens.csv"
}

# standin_start [ARGS...]: makes the test CA ($STANDIN_DIR/ca.crt, also the client CA), a server
# certificate for 127.0.0.1, the admin client certificate (CN=kubernetes-admin, O=system:masters)
# and $STANDIN_DIR/admin.conf (STANDIN_EXTRA_CLIENT_CA: a further CA file whose client certificates
# are accepted); starts the stand-in (ARGS are passed on, e.g. --expired-watch http)
# and waits until /version answers. Exports STANDIN_URL, STANDIN_PID, KUBECONFIG (admin.conf).
standin_start() {
  mkdir -p "$STANDIN_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$STANDIN_DIR/ca.key" \
    -out "$STANDIN_DIR/ca.crt" -subj "/CN=kube-apiserver-standin-ca" -days 2 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    fail "openssl: stand-in CA"
  _standin_cert server "/CN=kube-apiserver" \
    "$(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature')"
  _standin_cert admin "$(_standin_subj kubernetes-admin system:masters)" \
    "$(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature')"
  local args=(--port-file "$STANDIN_DIR/port" --tls-cert-file "$STANDIN_DIR/server.crt"
    --tls-private-key-file "$STANDIN_DIR/server.key" --client-ca-file "$STANDIN_DIR/client-ca.crt"
    --git-version "$STANDIN_VERSION")
  [ -f "$STANDIN_DIR/tokens.csv" ] && args+=(--token-auth-file "$STANDIN_DIR/tokens.csv")
  # Client certificates from the test CA, and from the cluster CA when STANDIN_EXTRA_CLIENT_CA names it
  # (as kube-apiserver's --client-ca-file is the cluster CA: nodes then log in with what hwca signed).
  cat "$STANDIN_DIR/ca.crt" ${STANDIN_EXTRA_CLIENT_CA:+"$STANDIN_EXTRA_CLIENT_CA"} > "$STANDIN_DIR/client-ca.crt" ||
    fail "cannot write the stand-in's client CA bundle"
  rm -f "$STANDIN_DIR/port"
  : > "$STANDIN_DIR/standin.log"
  start_bg "$STANDIN_PYTHON" "$STANDIN_PY" "${args[@]}" "$@" 2>> "$STANDIN_DIR/standin.log"
  STANDIN_PID=$!
  local i
  for i in $(seq 1 300); do
    [ -s "$STANDIN_DIR/port" ] && break
    kill -0 "$STANDIN_PID" 2>/dev/null || fail "the stand-in exited: $(cat "$STANDIN_DIR/standin.log")"
    sleep 0.1
  done
  [ -s "$STANDIN_DIR/port" ] || fail "the stand-in wrote no port file: $(cat "$STANDIN_DIR/standin.log")"
  STANDIN_URL="https://127.0.0.1:$(tr -d '\n' < "$STANDIN_DIR/port")"
  export STANDIN_URL
  for i in $(seq 1 100); do
    standin_curl admin /version -f -o /dev/null 2>/dev/null && break
    sleep 0.1
  done
  standin_curl admin /version -f -o /dev/null || fail "the stand-in does not answer /version: $(cat "$STANDIN_DIR/standin.log")"
  _standin_kubeconfig "$STANDIN_DIR/admin.conf" kubernetes-admin \
    "client-certificate-data: $(base64 -w0 < "$STANDIN_DIR/admin.crt")" \
    "client-key-data: $(base64 -w0 < "$STANDIN_DIR/admin.key")"
  export KUBECONFIG="$STANDIN_DIR/admin.conf"
  # kubectl's discovery cache goes to the test's folder, not to ~/.kube.
  export KUBECACHEDIR="$STANDIN_DIR/cache"
}

# standin_client_conf NAME CN [O...]: a client certificate for that identity ($STANDIN_DIR/NAME.crt,
# NAME.key) and a kubeconfig using it; prints the kubeconfig's path ($STANDIN_DIR/NAME.conf).
standin_client_conf() {
  local name=$1 cn=$2
  shift 2
  _standin_cert "$name" "$(_standin_subj "$cn" "$@")" \
    "$(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature')"
  _standin_kubeconfig "$STANDIN_DIR/$name.conf" "$cn" \
    "client-certificate-data: $(base64 -w0 < "$STANDIN_DIR/$name.crt")" \
    "client-key-data: $(base64 -w0 < "$STANDIN_DIR/$name.key")"
  printf '%s\n' "$STANDIN_DIR/$name.conf"
}

# standin_token_conf NAME TOKEN: a kubeconfig authenticating with a bearer token; prints its path.
standin_token_conf() {
  _standin_kubeconfig "$STANDIN_DIR/$1.conf" "$1" "token: $2"
  printf '%s\n' "$STANDIN_DIR/$1.conf"
}

# standin_kubectl CONF ARGS...: the real kubectl with that kubeconfig, bounded in time.
standin_kubectl() {
  local conf=$1
  shift
  timeout 60 kubectl --kubeconfig "$conf" --request-timeout 20s "$@"
}

# standin_curl WHO PATH [CURL ARGS...]: curl to $STANDIN_URL$PATH, trusting the test CA, as WHO:
# admin, a NAME given to standin_client_conf, token:TOKEN, or none. Body on stdout.
standin_curl() {
  local who=$1 path=$2
  shift 2
  local auth=()
  case "$who" in
    none) ;;
    token:*) auth=(-H "Authorization: Bearer ${who#token:}") ;;
    *) auth=(--cert "$STANDIN_DIR/$who.crt" --key "$STANDIN_DIR/$who.key") ;;
  esac
  curl -sS --max-time 10 --cacert "$STANDIN_DIR/ca.crt" "${auth[@]}" "$@" "$STANDIN_URL$path"
}

# The admin hooks. Each prints the stand-in's JSON answer and fails the test if the call fails.
standin_drop_watches() { standin_curl admin /standin/drop-watches -f -X POST || fail "POST /standin/drop-watches failed"; }
standin_compact() { standin_curl admin /standin/compact -f -X POST || fail "POST /standin/compact failed"; }
standin_stats() { standin_curl admin /standin/stats -f || fail "GET /standin/stats failed"; }

# standin_csr_yaml NAME SIGNER USAGES EXPIRATION CSR-FILE: a certificates.k8s.io/v1
# CertificateSigningRequest for `kubectl create --validate=false -f -`. USAGES is comma-separated
# ("digital signature,client auth"); EXPIRATION is expirationSeconds, or "" for none.
standin_csr_yaml() {
  local name=$1 signer=$2 usages=$3 exp=$4 csr=$5 u
  printf 'apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: %s\nspec:\n' "$name"
  printf '  request: %s\n  signerName: %s\n' "$(base64 -w0 < "$csr")" "$signer"
  [ -z "$exp" ] || printf '  expirationSeconds: %s\n' "$exp"
  printf '  usages:\n'
  local IFS=,
  for u in $usages; do printf '  - "%s"\n' "$u"; done
}

# standin_bootstrap_secret ID SECRET [EXTRA-GROUPS] [EXPIRATION]: the Secret kube-system/bootstrap-token-ID
# that makes ID.SECRET a bootstrap token (as kubeadm writes it), in YAML.
standin_bootstrap_secret() {
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-%s\n  namespace: kube-system\n' "$1"
  printf 'type: bootstrap.kubernetes.io/token\nstringData:\n  token-id: "%s"\n  token-secret: "%s"\n' "$1" "$2"
  printf '  usage-bootstrap-authentication: "true"\n  usage-bootstrap-signing: "true"\n'
  [ -z "${3:-}" ] || printf '  auth-extra-groups: "%s"\n' "$3"
  [ -z "${4:-}" ] || printf '  expiration: "%s"\n' "$4"
}

# standin_stop: SIGTERM; the stand-in must exit 0 within 10 seconds. One check.
standin_stop() {
  kill -TERM "$STANDIN_PID"
  local i rc=0
  for i in $(seq 1 100); do kill -0 "$STANDIN_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$STANDIN_PID" 2>/dev/null && fail "the stand-in still runs 10 s after SIGTERM"
  wait "$STANDIN_PID" || rc=$?
  [ "$rc" = 0 ] || fail "the stand-in exited $rc after SIGTERM: $(cat "$STANDIN_DIR/standin.log")"
  ok
}
