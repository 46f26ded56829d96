#!/usr/bin/env bash
# The blog's etcd certificates, made by examples/cfssl-blog/run.sh with the CA key in SoftHSM2, run a
# real two-member etcd cluster on loopback with client and peer TLS and both --client-cert-auth and
# --peer-client-cert-auth (the server certificate serves clients, serves peers and dials peers, so it
# needs serverAuth and clientAuth), and a real etcdctl puts and gets a key with the client certificate.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-cfssl.bash" || exit 1

make_token hwca-ca
KEY=$(key_uri hwca-ca ca)
ADDRESS=127.0.0.1,localhost HWCA="$HWCA" bash "$HWCA_SOURCE_DIR/examples/cfssl-blog/run.sh" "$KEY" "$T/pki" \
  > run.out 2> run.err || fail "run.sh failed: $(cat run.err)"
ok
cd "$T/pki"
[ "$(ext_value server.pem subjectAltName)" = "DNS:localhost, IP Address:127.0.0.1" ] || fail "server SANs: $(ext_value server.pem subjectAltName)"
ext_text server.pem extendedKeyUsage | grep -q 'TLS Web Server Authentication, TLS Web Client Authentication' ||
  fail "server EKU: $(ext_text server.pem extendedKeyUsage)"
ok
verify_chain ca.pem server.pem
verify_chain ca.pem client.pem

free_port C1; free_port P1; free_port C2; free_port P2
CLUSTER="m1=https://127.0.0.1:$P1,m2=https://127.0.0.1:$P2"
start_member() {
  local name=$1 client=$2 peer=$3
  start_bg etcd --name "$name" --data-dir "$T/etcd-$name" \
    --listen-client-urls "https://127.0.0.1:$client" --advertise-client-urls "https://127.0.0.1:$client" \
    --listen-peer-urls "https://127.0.0.1:$peer" --initial-advertise-peer-urls "https://127.0.0.1:$peer" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token hwca-cfssl-etcd \
    --cert-file server.pem --key-file server-key.pem --trusted-ca-file ca.pem --client-cert-auth \
    --peer-cert-file server.pem --peer-key-file server-key.pem --peer-trusted-ca-file ca.pem --peer-client-cert-auth \
    > "$T/etcd-$name.log" 2>&1
}
start_member m1 "$C1" "$P1"
start_member m2 "$C2" "$P2"

export ETCDCTL_API=3
ctl() {
  etcdctl --dial-timeout=3s --command-timeout=5s --cacert=ca.pem --cert=client.pem --key=client-key.pem "$@"
}
ready=0
for _ in $(seq 1 60); do
  if ctl --endpoints="https://127.0.0.1:$C1,https://127.0.0.1:$C2" endpoint health >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || fail "etcd did not become healthy: $(tail -5 "$T/etcd-m1.log") $(tail -5 "$T/etcd-m2.log")"
ok

# The blog's own check, then a write on one member read back from the other (replicated over peer TLS).
ctl --write-out=table --endpoints="https://127.0.0.1:$C1,https://127.0.0.1:$C2" member list > members.txt ||
  fail "member list failed"
[ "$(grep -c 'started' members.txt)" = 2 ] || fail "member list: $(cat members.txt)"
grep -q "https://127.0.0.1:$P2" members.txt || fail "member list: $(cat members.txt)"
ok
ctl --endpoints="https://127.0.0.1:$C1" put /hwca/cfssl-blog "made by hwca, key in a token" > put.out || fail "put failed"
[ "$(cat put.out)" = OK ] || fail "put: $(cat put.out)"
ok
got=""
for _ in $(seq 1 20); do
  got=$(ctl --endpoints="https://127.0.0.1:$C2" get /hwca/cfssl-blog --print-value-only 2>/dev/null) || true
  [ "$got" = "made by hwca, key in a token" ] && break
  sleep 0.25
done
[ "$got" = "made by hwca, key in a token" ] || fail "get from m2: '$got'"
ok

# etcd really serves hwca's certificate on both ports, and really demands client certificates.
for port in "$C1" "$P2"; do
  openssl s_client -connect "127.0.0.1:$port" -CAfile ca.pem -cert client.pem -key client-key.pem </dev/null \
    > "s_client.$port" 2>&1 || true
  grep -q 'Verify return code: 0 (ok)' "s_client.$port" || fail "s_client to $port: $(tail -5 "s_client.$port")"
  [ "$(openssl x509 -in "s_client.$port" -noout -fingerprint -sha256)" = "$(openssl x509 -in server.pem -noout -fingerprint -sha256)" ] ||
    fail "port $port serves another certificate"
  ok
done
if etcdctl --dial-timeout=3s --command-timeout=3s --cacert=ca.pem --endpoints="https://127.0.0.1:$C1" \
     get /hwca/cfssl-blog >/dev/null 2>&1; then
  fail "etcd answered a client without a certificate"
fi
ok
# A client certificate from another CA (cfssl's own, file key) is refused.
cfssl gencert -initca "$HWCA_SOURCE_DIR/examples/cfssl-blog/ca-csr.json" 2>/dev/null | cfssljson_bare other-ca
echo '{"CN":"client","hosts":[""],"key":{"algo":"rsa","size":2048}}' |
  cfssl gencert -config=ca-config.json -ca=other-ca.pem -ca-key=other-ca-key.pem - 2>/dev/null | cfssljson_bare other-client
if etcdctl --dial-timeout=3s --command-timeout=3s --cacert=ca.pem --cert=other-client.pem --key=other-client-key.pem \
     --endpoints="https://127.0.0.1:$C1" get /hwca/cfssl-blog >/dev/null 2>&1; then
  fail "etcd accepted a client certificate from another CA"
fi
ok
# No TLS complaints between the members or from the gRPC gateway (which dials with the server cert).
# Only m1 was sent the refused clients above, so m2's log must be free of TLS rejections.
if grep -Eiq 'incompatible key usage' "$T/etcd-m1.log" "$T/etcd-m2.log"; then
  fail "etcd: incompatible key usage: $(grep -Eih 'incompatible key usage' "$T/etcd-m1.log" "$T/etcd-m2.log" | head -3)"
fi
if grep -Eiq 'bad certificate|unknown authority' "$T/etcd-m2.log"; then
  fail "etcd m2 logged TLS errors: $(grep -Ei 'bad certificate|unknown authority' "$T/etcd-m2.log" | head -3)"
fi
ok

finish
