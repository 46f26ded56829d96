#!/usr/bin/env bash
# Benchmark rows 4 and 6 (issue 7): `hwca k8s init` on a generated cluster against sequential
# `cfssl gencert` calls making the same kind of certificate.
#   bench/bulk.sh HWCA WORKDIR QUICK
# 4: a cluster file with 10,000 worker nodes (1,000 when QUICK=1), mirroring examples/loopback-cluster.yaml,
#    CA keys generated in a fresh SoftHSM2 token (label hwca-example, PIN from HWCA_PIN) in WORKDIR;
#    wall time and peak RSS (/usr/bin/time -f %M) of `hwca k8s init`; the kubelet client certificates
#    (nodes/*/kubelet.conf) are counted. The reference is a measured sample of 200 sequential
#    `cfssl gencert` calls (ECDSA-P256 key, client auth, file CA key, | cfssljson -bare), extrapolated to
#    the same number of certificates and labelled so.
# 6: per-certificate time and peak RSS of `hwca k8s init` at 1,000 / 10,000 / 50,000 certificates
#    (QUICK: 1,000 / 5,000).
# Prints one JSON object per line. Loopback only; every loop is bounded. Its folder (WORKDIR/bulk.*) is
# left for the caller to remove.
set -euo pipefail

HWCA=$1
W=$2
QUICK=${3:-0}
MODULE=/usr/lib/softhsm/libsofthsm2.so
SAMPLE=200

B=$(mktemp -d "$W/bulk.XXXXXX")
mkdir -p "$B/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$B/tokens" > "$B/softhsm2.conf"
export SOFTHSM2_CONF=$B/softhsm2.conf
export HWCA_PIN="bulk-$$-$RANDOM"
softhsm2-util --init-token --free --label hwca-example --so-pin "so-$$-$RANDOM" --pin "$HWCA_PIN" >/dev/null

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# cluster WORKERS FILE: the example cluster (three stacked control-plane/etcd nodes) with WORKERS workers.
cluster() {
  {
    cat <<EOF
name: kubernetes
kubernetesVersion: "1.30"
controlPlaneEndpoint: 127.0.0.1:6443
serviceSubnet: 10.96.0.0/12
podSubnet: 10.244.0.0/16
dnsDomain: cluster.local
controlPlane:
  - {name: cp1, ip: 127.0.0.1}
  - {name: cp2, ip: 127.0.0.1}
  - {name: cp3, ip: 127.0.0.1}
keyAlgorithm: ecdsa-p256
caKeyAlgorithm: ecdsa-p256
validity:
  ca: 87600h
  leaf: 8760h
cas:
  kubernetes-ca:
    key: "pkcs11:token=hwca-example;object=kubernetes-ca?module-path=$MODULE"
  etcd-ca:
    key: "pkcs11:token=hwca-example;object=etcd-ca?module-path=$MODULE"
  front-proxy-ca:
    key: "pkcs11:token=hwca-example;object=front-proxy-ca?module-path=$MODULE"
workers:
EOF
    awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) printf "  - {name: w%d, ip: 10.%d.%d.%d}\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
  } > "$2"
}

# run_init WORKERS TAG: one `hwca k8s init` into a fresh folder and ledger; sets SECONDS_USED, RSS_MB, USER_S, SYS_S,
# ISSUED, KUBELET_CONFS.
run_init() {
  local d=$B/$2
  mkdir -p "$d/home"
  cluster "$1" "$d/cluster.yaml"
  local t0 t1
  # This file system (ext4 without a journal: fs/ext4/ialloc.c, recently_deleted()) makes every new inode
  # skip the inodes deleted in the last 60 s, or 360 s when their inode table block is dirty (and a block
  # that receives a new inode is dirty again), each skip a look-up in the buffer cache: after a fresh
  # deletion of many files (an earlier benchmark's or test run's folders, other users) file creation is
  # several times slower, in the kernel (10,000 workers: 4.1 s wall with 2.6 s of system time on a quiet
  # file system; 18.8 s with 30.8 s of system time minutes after two benchmark folders were removed).
  # The runs here delete nothing in between; the system and user CPU times are printed, so that a run on
  # a file system in that state shows as one. Write back and wait a little, then time.
  sync -f "$B"; sleep 6
  t0=$(now)
  HWCA_HOME=$d/home /usr/bin/time -f '%M %U %S' -o "$d/rss" "$HWCA" k8s init --config "$d/cluster.yaml" --out "$d/out" > "$d/init.log"
  t1=$(now)
  SECONDS_USED=$(calc %.3f "$t1 - $t0")
  read -r rss_kb USER_S SYS_S < <(tail -n1 "$d/rss")
  RSS_MB=$(calc %.0f "$rss_kb / 1024")
  ISSUED=$(sed -nE 's/^init: ([0-9]+) certificates? issued.*/\1/p' "$d/init.log")
  KUBELET_CONFS=$(find "$d/out/nodes" -mindepth 2 -maxdepth 2 -name kubelet.conf | wc -l)
  # The output stays until the end (deleting it here would slow the next run down, see above); the CA
  # keys stay in the token and the next run reuses them.
}

# 4: hwca.
workers=10000; [ "$QUICK" = 1 ] && workers=1000
run_init "$workers" bulk4
hwca_s=$SECONDS_USED hwca_rss=$RSS_MB hwca_kubelets=$KUBELET_CONFS hwca_user=$USER_S hwca_sys=$SYS_S

# 4: cfssl, a measured sample of sequential calls, extrapolated to the kubelet client certificates.
C=$B/cfssl
mkdir -p "$C"
(
  cd "$C"
  echo '{"CN":"kubernetes","key":{"algo":"ecdsa","size":256}}' | cfssl gencert -initca - 2>/dev/null | cfssljson -bare ca
  echo '{"signing":{"default":{"expiry":"8760h","usages":["signing","digital signature","client auth"]}}}' > ca-config.json
)
t0=$(now)
for i in $(seq 1 $SAMPLE); do
  echo "{\"CN\":\"system:node:w$i\",\"names\":[{\"O\":\"system:nodes\"}],\"key\":{\"algo\":\"ecdsa\",\"size\":256}}" \
    | (cd "$C" && cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=ca-config.json - 2>/dev/null | cfssljson -bare "w$i")
done
t1=$(now)
made=$(ls "$C"/w*-key.pem | wc -l)
[ "$made" = "$SAMPLE" ] || { echo "bulk.sh: cfssl made $made of $SAMPLE certificates" >&2; exit 1; }
cfssl_s=$(calc %.3f "($t1 - $t0) / $SAMPLE * $hwca_kubelets")
ratio=$(calc %.1f "$cfssl_s / $hwca_s")
printf '{"section":4,"name":"bulk %s workers, cfssl time / hwca time","hwca":"%.1fs","reference":"%.1fs (extrapolated from %d)","ratio":%s,"hwca_peak_rss_mb":%s,"kubelet_client_certificates":%s,"hwca_cpu_user_s":%s,"hwca_cpu_system_s":%s}\n' \
  "$workers" "$hwca_s" "$cfssl_s" "$SAMPLE" "$ratio" "$hwca_rss" "$hwca_kubelets" "$hwca_user" "$hwca_sys"

# 6: per-certificate time and peak RSS. About two certificates per worker (kubelet.conf and kubelet),
# plus the control plane's.
sizes="1000 10000 50000"; [ "$QUICK" = 1 ] && sizes="1000 5000"
points=""
for certs in $sizes; do
  run_init $(((certs - 24) / 2)) "scale$certs"
  p=$(printf '{"certs":%s,"seconds":%s,"ms_per_cert":%s,"rss_mb":%s,"cpu_user_s":%s,"cpu_system_s":%s}' "$ISSUED" \
        "$SECONDS_USED" "$(calc %.3f "$SECONDS_USED * 1000 / $ISSUED")" "$RSS_MB" "$USER_S" "$SYS_S")
  points=${points:+$points,}$p
done
printf '{"section":6,"name":"bulk per-certificate time and RSS","points":[%s]}\n' "$points"
# $B (about 63,000 workers' files after row 6) stays for the caller to remove with WORKDIR: bench/run does
# that when every section is done, since a mass deletion here would slow the sections after this one.
