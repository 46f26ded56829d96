#!/usr/bin/env bash
# bench section 5: hwca serve (CA key in SoftHSM2, or with --tpm in a TPM 2.0 simulator, ledger on)
# against cfssl serve (CA key of the same algorithm in a file, no database), both answering authsign
# from 1 client and from 2 concurrent clients on keep-alive connections (bench/serve_load.py). hwca is
# measured with --workers 2 (1 and 2 clients) and --workers 1 (2 clients).
#
#   bench/serve.sh HWCA-BINARY [--quick] [--tpm] [--algo rsa-2048|ecdsa-p256]
#
# --tpm: the CA key is a persistent key (tpm2:handle=0x81000100) made by `hwca gencert -initca` on a
# swtpm this script starts in its temporary folder (loopback ports) and stops by PID. A TPM executes
# one command at a time, so 2 workers cannot sign faster than 1 there; both are measured anyway.
#
# Prints one JSON line: {"section":5,"name":...,"hwca_per_second":..,"hwca_1_worker_per_second":..,
# "cfssl_per_second":..,"ratio":hwca/cfssl,"workers_ratio":2 workers/1 worker, "hwca_1_client_per_second":..,
# "cfssl_1_client_per_second":..,"ratio_1_client":..} (without "1_client": 2 clients). Loopback only;
# every process it starts is stopped by PID.
set -euo pipefail
HWCA=${1:?usage: bench/serve.sh HWCA-BINARY [--quick] [--tpm] [--algo rsa-2048|ecdsa-p256]}
HWCA=$(readlink -f "$HWCA")
shift
QUICK=0 TPM=0 ALGO=rsa-2048
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --tpm) TPM=1 ;;
    --algo) ALGO=${2:?--algo needs a value}; shift ;;
    *) echo "bench/serve.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$ALGO" in
  rsa-2048) CFSSL_KEY='{"algo":"rsa","size":2048}' ;;
  ecdsa-p256) CFSSL_KEY='{"algo":"ecdsa","size":256}' ;;
  *) echo "bench/serve.sh: --algo rsa-2048 or ecdsa-p256" >&2; exit 2 ;;
esac
PER_CLIENT=1500; [ $QUICK = 1 ] && PER_CLIENT=300
[ $TPM = 1 ] && { PER_CLIENT=600; [ $QUICK = 1 ] && PER_CLIENT=150; }
LOAD=$(cd "$(dirname "$0")" && pwd)/serve_load.py
MODULE=/usr/lib/softhsm/libsofthsm2.so
KEY_HEX=00112233445566778899aabbccddeeff

W=$(mktemp -d /tmp/hwca-bench-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
export HWCA_HOME=$W/home SOFTHSM2_CONF=$W/softhsm2.conf
mkdir -p home tokens
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/tokens" > softhsm2.conf
(umask 077; echo -n "bench-pin-$$" > pin)
softhsm2-util --init-token --free --label bench --so-pin "so-$$" --pin "bench-pin-$$" >/dev/null
KEY="pkcs11:token=bench;object=serve-ca?module-path=$MODULE&pin-source=file:$W/pin"
WHERE=SoftHSM2
_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# shellcheck source=../scripts/ports.bash
source "$(dirname "$LOAD")/../scripts/ports.bash"
if [ $TPM = 1 ]; then
  # A private swtpm on two free loopback ports (server P, control P+1), state in this folder.
  mkdir -p swtpm
  tpm_up=0
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    tport=$(random_port)
    if port_used "$tport" || port_used $((tport + 1)); then continue; fi
    swtpm socket --tpm2 --tpmstate dir="$W/swtpm" --server type=tcp,port=$tport,bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((tport + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear >> swtpm.log 2>&1 &
    tpid=$!; pids+=($tpid)
    for i in $(seq 1 100); do
      kill -0 $tpid 2>/dev/null || break
      if _port_open "$tport"; then tpm_up=1; break; fi
      sleep 0.1
    done
    [ $tpm_up = 1 ] && break
  done
  [ $tpm_up = 1 ] || { echo "bench/serve.sh: swtpm would not start: $(cat swtpm.log)" >&2; exit 1; }
  (umask 077; echo -n "tpm-auth-$$" > tpm-auth)
  KEY="tpm2:handle=0x81000100?tcti=swtpm:host=127.0.0.1,port=$tport&pin-source=file:$W/tpm-auth"
  WHERE=swtpm
fi

echo "{\"CN\":\"bench serve CA\",\"key\":$CFSSL_KEY}" > ca-csr.json
"$HWCA" gencert -initca -ca-key "$KEY" ca-csr.json --bare hwca-ca >/dev/null
cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare cfssl-ca
cat > config.json <<EOF
{"signing":{"default":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"],"auth_key":"key1"}},
 "auth_keys":{"key1":{"type":"standard","key":"$KEY_HEX"}}}
EOF
mkdir csrs
for i in $(seq 1 16); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=node$i.bench" \
    -addext "subjectAltName=DNS:node$i.bench" -out "csrs/node$i.csr" 2>/dev/null
done

free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(random_port)
    port_used "$p" || { echo "$p"; return 0; }
  done
  echo "bench/serve.sh: no free port" >&2; exit 1
}
wait_healthy() {  # PORT PID PATH
  local i
  for i in $(seq 1 150); do
    curl -s -o /dev/null --max-time 1 -X "${4:-GET}" "http://127.0.0.1:$1$3" && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench/serve.sh: server exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench/serve.sh: server did not come up" >&2; exit 1
}
# run_clients PORT CLIENTS: CLIENTS concurrent clients x PER_CLIENT authsign requests each; prints
# certificates per second overall.
run_clients() {
  local port=$1 clients=$2 t0 t1 c
  local cpids=()
  rm -f out.* serials.* r.*.json
  t0=$(date +%s.%N)
  for c in $(seq 1 "$clients"); do
    python3 "$LOAD" load --url "http://127.0.0.1:$port" --key "$KEY_HEX" --profile default --csr-dir csrs \
      --count "$PER_CLIENT" --out "out.$c" --serials "serials.$c" > "r.$c.json" &
    cpids+=($!)
  done
  for c in $(seq 1 "$clients"); do
    wait "${cpids[$((c - 1))]}" || { echo "bench/serve.sh: client failed: $(cat "r.$c.json")" >&2; exit 1; }
  done
  t1=$(date +%s.%N)
  awk -v n=$((clients * PER_CLIENT)) -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }'
}
stop() {  # PID
  kill -TERM "$1"; wait "$1" 2>/dev/null || true
}

declare -A hwca=()
for workers in 1 2; do
  port=$(free_port)
  rm -f home/ledger.db*
  "$HWCA" serve -ca hwca-ca.pem -ca-key "$KEY" -config config.json -port "$port" --workers $workers 2> "hwca-$workers.log" &
  pid=$!; pids+=($pid)
  wait_healthy "$port" $pid /healthz
  hwca[$workers]=$(run_clients "$port" 2)
  [ $workers = 2 ] && hwca_one_client=$(run_clients "$port" 1)
  stop $pid
done

port=$(free_port)
cfssl serve -ca cfssl-ca.pem -ca-key cfssl-ca-key.pem -config config.json -address 127.0.0.1 -port "$port" 2> cfssl.log &
pid=$!; pids+=($pid)
wait_healthy "$port" $pid /api/v1/cfssl/info POST
cfssl_rate=$(run_clients "$port" 2)
cfssl_one_client=$(run_clients "$port" 1)
stop $pid

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "null"; else printf "%.3f", a / b }'; }
printf '{"section":5,"name":"hwca serve (CA key in %s) / cfssl serve, %s CA, 2 clients","ca_key":"%s","algo":"%s","requests":%d,"hwca_per_second":%s,"hwca_1_worker_per_second":%s,"cfssl_per_second":%s,"ratio":%s,"workers_ratio":%s,"hwca_1_client_per_second":%s,"cfssl_1_client_per_second":%s,"ratio_1_client":%s}\n' \
  "$WHERE" "$ALGO" "$WHERE" "$ALGO" $((2 * PER_CLIENT)) "${hwca[2]}" "${hwca[1]}" "$cfssl_rate" "$(ratio "${hwca[2]}" "$cfssl_rate")" "$(ratio "${hwca[2]}" "${hwca[1]}")" \
  "$hwca_one_client" "$cfssl_one_client" "$(ratio "$hwca_one_client" "$cfssl_one_client")"
