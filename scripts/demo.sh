#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the demo on the embedded default:
# a private SoftHSM2 token under $HWCA_HOME (default ./.hwca, its own softhsm2.conf; nothing
# system-wide is touched), a root key generated inside it, a self-signed root, a leaf issued from a
# CSR through the token, both verified with openssl and certtool, and a summary. Running it again
# reuses the token, the key and the root, and issues one more leaf.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
mkdir -p build
if ! builddir=$(bash scripts/build.sh release 2>build/demo-build.log | tail -n1); then
  cat build/demo-build.log >&2; echo "demo: the build failed (log above)" >&2; exit 1
fi
hwca="$PWD/$builddir/hwca"

export HWCA_HOME=${HWCA_HOME:-$PWD/.hwca}
mkdir -p "$HWCA_HOME" && chmod 700 "$HWCA_HOME"
HWCA_HOME=$(cd "$HWCA_HOME" && pwd)
module=/usr/lib/softhsm/libsofthsm2.so
out="$HWCA_HOME/demo"
mkdir -p "$out"

# The embedded default token: its own config and folder, unless the caller already set SOFTHSM2_CONF.
if [ -z "${SOFTHSM2_CONF:-}" ]; then
  mkdir -p "$HWCA_HOME/tokens"
  [ -f "$HWCA_HOME/softhsm2.conf" ] || printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$HWCA_HOME/tokens" > "$HWCA_HOME/softhsm2.conf"
  export SOFTHSM2_CONF="$HWCA_HOME/softhsm2.conf"
fi
# PINs live in 0600 files and reach hwca through pin-source=file:, never through argv.
for f in user.pin so.pin; do
  [ -s "$HWCA_HOME/$f" ] || (umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$HWCA_HOME/$f")
done

token=hwca-root
key="pkcs11:token=$token;object=root-ca?module-path=$module&pin-source=file:$HWCA_HOME/user.pin"
steps=()

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label: +$token *$"; then
  steps+=("token    reused SoftHSM2 token '$token' ($SOFTHSM2_CONF)")
else
  "$hwca" token init --token "pkcs11:token=$token?module-path=$module&pin-source=file:$HWCA_HOME/user.pin" \
    --so-pin-source "file:$HWCA_HOME/so.pin" >/dev/null
  steps+=("token    initialised SoftHSM2 token '$token' ($SOFTHSM2_CONF)")
fi

if "$hwca" key show --key "$key" >/dev/null 2>"$out/.err"; then
  steps+=("key      reused root key 'root-ca' in the token")
elif grep -q "no private key matches" "$out/.err"; then
  "$hwca" key generate --key "$key" --algo ecdsa-p384 >/dev/null
  steps+=("key      generated ecdsa-p384 root key 'root-ca' inside the token")
else
  cat "$out/.err" >&2; exit 1
fi
rm -f "$out/.err"

if [ -s "$out/ca.pem" ]; then
  steps+=("root     reused $out/ca.pem")
else
  "$hwca" ca init --key "$key" --subject "/CN=hwca Demo Root CA/O=hwca demo" --validity 87600h --out "$out/ca.pem" >/dev/null
  steps+=("root     self-signed root certificate $out/ca.pem (10 years)")
fi

# A leaf: its key and CSR made by openssl, as any client would; signed through the token.
n=$(date +%Y%m%d%H%M%S)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/leaf-$n-key.pem" \
  -out "$out/leaf-$n.csr" -subj "/CN=demo.hwca.local" \
  -addext "subjectAltName=DNS:demo.hwca.local,IP:127.0.0.1" 2>/dev/null
"$hwca" sign --ca "$out/ca.pem" --ca-key "$key" --csr "$out/leaf-$n.csr" --profile server --bare "$out/leaf-$n"
steps+=("leaf     $out/leaf-$n.pem (server profile) signed by the token key")

openssl verify -CAfile "$out/ca.pem" "$out/leaf-$n.pem" >/dev/null
steps+=("verify   openssl verify: OK")
certtool --verify --load-ca-certificate "$out/ca.pem" --infile "$out/leaf-$n.pem" >/dev/null 2>&1
certtool --verify-chain --infile <(cat "$out/leaf-$n.pem" "$out/ca.pem") >/dev/null 2>&1
steps+=("verify   certtool --verify and --verify-chain: OK")

attrs=$("$hwca" key show --key "$key" | grep -E '^  (local|sensitive|always-sensitive|never-extractable|extractable):' | tr -s ' ' | sed 's/^ //' | paste -sd, -)
# pkcs11-tool's own reading, logged in through a pseudo-terminal so that the PIN is not in its argv.
p11=$({ sleep 0.5; cat "$HWCA_HOME/user.pin"; echo; } \
  | script -qec "pkcs11-tool --module $module --token-label $token --login --list-objects --type privkey" /dev/null 2>/dev/null \
  | tr -d '\r' | grep -A6 "label: *root-ca\$" | grep -E 'Access' | sed 's/^ *Access: *//')
count=$("$hwca" ledger list | wc -l)

echo "hwca demo (state in $HWCA_HOME)"
for s in "${steps[@]}"; do echo "  $s"; done
echo "  key      hwca key show: $attrs"
echo "  key      pkcs11-tool:  $p11"
echo "  ledger   $count certificate(s) recorded in $HWCA_HOME/ledger.db (hwca ledger list)"
echo "  chain    $(openssl x509 -in "$out/leaf-$n.pem" -noout -subject -nameopt RFC2253) <- $(openssl x509 -in "$out/ca.pem" -noout -subject -nameopt RFC2253)"

# ---------------------------------------------------------------------------------------------------
# Kubernetes (hwca k8s): the seed document's whole cluster PKI from examples/seed-cluster.yaml, its three
# CA keys (kubernetes-ca, etcd-ca, front-proxy-ca) generated inside the same token 'hwca-root' on the
# first run and reused afterwards; the PIN reaches hwca through HWCA_PIN, read from the 0600 PIN file.
# A second run issues nothing (init is idempotent). Every certificate is checked with openssl verify
# against its CA, then summarised with the check-expiration table.
k8s_out="$HWCA_HOME/k8s"
echo
echo "hwca k8s init --config examples/seed-cluster.yaml --out $k8s_out"
HWCA_PIN=$(cat "$HWCA_HOME/user.pin") "$hwca" k8s init --config examples/seed-cluster.yaml --out "$k8s_out" | sed 's/^/  /'
verified=0
for pair in ca.crt:apiserver.crt ca.crt:apiserver-kubelet-client.crt front-proxy-ca.crt:front-proxy-client.crt \
            etcd/ca.crt:apiserver-etcd-client.crt etcd/ca.crt:etcd/server.crt etcd/ca.crt:etcd/peer.crt \
            etcd/ca.crt:etcd/healthcheck-client.crt etcd/ca.crt:flanneld.crt etcd/ca.crt:etcd/etcdctl-client.crt ca.crt:kubelet.crt; do
  openssl verify -CAfile "$k8s_out/pki/${pair%%:*}" "$k8s_out/pki/${pair#*:}" >/dev/null
  verified=$((verified + 1))
done
for n in vm1 vm2 vm3; do
  openssl verify -CAfile "$k8s_out/pki/etcd/ca.crt" "$k8s_out/nodes/$n/pki/etcd/server.crt" "$k8s_out/nodes/$n/pki/etcd/peer.crt" >/dev/null
  openssl verify -CAfile "$k8s_out/pki/ca.crt" "$k8s_out/nodes/$n/pki/kubelet.crt" >/dev/null
  verified=$((verified + 3))
done
echo "  verify   openssl verify: $verified certificates OK against their CA (kubernetes-ca, etcd-ca, front-proxy-ca)"
echo "  apiserver SANs: $(openssl x509 -in "$k8s_out/pki/apiserver.crt" -noout -ext subjectAltName | tail -n +2 | sed 's/^ *//')"
echo
echo "hwca k8s check-expiration --pki $k8s_out"
"$hwca" k8s check-expiration --pki "$k8s_out" | sed 's/^/  /'
