#!/usr/bin/env bash
# The certificate workflow of the blog post "k8s certificates with cfssl" (blog.51cto.com/ylw6006/2167592),
# command for command, with `hwca` in place of `cfssl` and the CA key in a PKCS#11 token instead of
# ca-key.pem. The output is still piped through the real `cfssljson -bare`.
#
#   run.sh KEY_URI [OUTDIR]
#   HWCA_CA_KEY=KEY_URI OUT=OUTDIR run.sh
#
#   KEY_URI   where the CA key lives (generated there by -initca when absent, reused when present), e.g.
#             'pkcs11:token=hwca-ca;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/hwca/ca.pin'
#   OUTDIR    where ca.pem, flanneld.pem, server.pem, ... go (default ./cfssl-blog-out); created if needed
#   HWCA      the hwca binary (default: hwca on PATH)
#   CFSSLJSON the cfssljson binary (default: cfssljson on PATH)
#   ADDRESS   the etcd server's hosts (default: the blog's 192.168.115.5,192.168.115.6,192.168.115.7,vm1,vm2,vm3)
#
# Prints one line per certificate made. hwca prints one warning per `-profile=kubernetes`: the blog's
# ca-config.json has only a default profile, and hwca (like cfssl) falls back to it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KEY=${1:-${HWCA_CA_KEY:-}}
OUT=${2:-${OUT:-./cfssl-blog-out}}
HWCA=${HWCA:-hwca}
CFSSLJSON=${CFSSLJSON:-cfssljson}
ETCD_ADDRESS=${ADDRESS-192.168.115.5,192.168.115.6,192.168.115.7,vm1,vm2,vm3}

if [ -z "$KEY" ]; then
  echo "usage: $0 KEY_URI [OUTDIR]   (or HWCA_CA_KEY=KEY_URI $0)" >&2
  exit 2
fi
case "$KEY" in
  *pin-value=*) echo "$0: put the PIN in a file and use pin-source=file:..., not pin-value=" >&2; exit 2 ;;
esac

case "$HWCA" in */*) HWCA=$(cd "$(dirname "$HWCA")" && pwd)/$(basename "$HWCA") ;; esac
case "$CFSSLJSON" in */*) CFSSLJSON=$(cd "$(dirname "$CFSSLJSON")" && pwd)/$(basename "$CFSSLJSON") ;; esac
mkdir -p "$OUT"
cd "$OUT"
OUT=$(pwd)
cfssljson() { command "$CFSSLJSON" "$@"; }

# 一、根证书 (the root: its key is generated inside the token; no ca-key.pem is written)
cat "$HERE/ca-csr.json" | "$HWCA" gencert -initca -ca-key="$KEY" - | cfssljson -bare ca -
cp "$HERE/ca-config.json" ca-config.json

# 二、flannel证书
"$HWCA" gencert -ca=ca.pem -ca-key="$KEY" -config=ca-config.json -profile=kubernetes "$HERE/flanneld-csr.json" | cfssljson -bare flanneld

# 三、etcd证书 1、服务端证书
export ADDRESS=$ETCD_ADDRESS
export NAME=server
echo '{"CN":"'$NAME'","hosts":[""],"key":{"algo":"rsa","size":2048}}' | "$HWCA" gencert -config=ca-config.json -ca=ca.pem -ca-key="$KEY" -hostname="$ADDRESS" - | cfssljson -bare $NAME

# 三、etcd证书 2、客户端证书
export ADDRESS=
export NAME=client
echo '{"CN":"'$NAME'","hosts":[""],"key":{"algo":"rsa","size":2048}}' | "$HWCA" gencert -config=ca-config.json -ca=ca.pem -ca-key="$KEY" -hostname="$ADDRESS" - | cfssljson -bare $NAME

# 四、Master节点证书 (kube-apiserver)
"$HWCA" gencert -ca=ca.pem -ca-key="$KEY" -config=ca-config.json -profile=kubernetes "$HERE/k8s-csr.json" | cfssljson -bare kubernetes

# 五、Node节点证书 1、kube-proxy证书
"$HWCA" gencert -ca=ca.pem -ca-key="$KEY" -config=ca-config.json -profile=kubernetes "$HERE/kube-proxy-csr.json" | cfssljson -bare kube-proxy

for name in ca flanneld server client kubernetes kube-proxy; do
  subject=$(openssl x509 -in "$name.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
  until=$(openssl x509 -in "$name.pem" -noout -enddate | sed 's/^notAfter=//')
  sans=$(openssl x509 -in "$name.pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | sed 's/^ *//')
  key=$([ -f "$name-key.pem" ] && echo "$name-key.pem" || echo "key in token")
  echo "$OUT/$name.pem  subject=$subject  until=$until  ${sans:+sans=$sans  }($key)"
done
