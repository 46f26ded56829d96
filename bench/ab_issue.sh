#!/usr/bin/env bash
# Before/after for bench section 2: two builds of hwca_issue_bench (e.g. before and after a change to
# core/), run alternately on the same SoftHSM2 token and keys, against the raw C_Sign rate measured
# in the same invocation. Alternating the two, repetition by repetition, keeps the machine's changing
# load from favouring either side.
#
#   bench/ab_issue.sh OLD-BUILD-DIR NEW-BUILD-DIR [SECONDS] [REPS]
#
# Both folders are Release builds (bench/hwca_issue_bench in each; hwca and bench/hwca_raw_sign are
# taken from NEW). Prints one JSON line per measurement. Loopback and temporary files only.
set -euo pipefail
OLD=$(readlink -f "${1:?usage: bench/ab_issue.sh OLD-BUILD NEW-BUILD [SECONDS] [REPS]}")
NEW=$(readlink -f "${2:?usage: bench/ab_issue.sh OLD-BUILD NEW-BUILD [SECONDS] [REPS]}")
SECS=${3:-3}
REPS=${4:-2}
M=/usr/lib/softhsm/libsofthsm2.so
W=$(mktemp -d /tmp/hwca-bench-ab.XXXXXX)
trap 'rm -rf "$W"' EXIT
export HWCA_HOME=$W/home SOFTHSM2_CONF=$W/softhsm2.conf
mkdir -p "$HWCA_HOME" "$W/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/tokens" > "$W/softhsm2.conf"
(umask 077; echo -n "bench-pin-$$" > "$W/pin")
softhsm2-util --init-token --free --label bench --so-pin "so-$$" --pin "bench-pin-$$" >/dev/null
uri() { echo "pkcs11:token=bench;object=$1?module-path=$M&pin-source=file:$W/pin"; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "null"; else printf "%.3f", a / b }'; }

for algo in ecdsa-p256 rsa-2048; do
  "$NEW/hwca" key generate --key "$(uri "$algo")" --algo "$algo" >/dev/null
  "$NEW/hwca" ca init --key "$(uri "$algo")" --subject "/CN=bench $algo" --out "$W/ca-$algo.pem" >/dev/null
  for t in 1 2; do
    r=$("$NEW/bench/hwca_raw_sign" "$M" bench "$algo" "$W/pin" "$t" "$SECS" | field per_second)
    echo "{\"name\":\"raw C_Sign/s $algo\",\"threads\":$t,\"per_second\":$r}"
    for batch in 64 1; do
      for rep in $(seq 1 "$REPS"); do
        for side in old new; do
          b=$([ $side = old ] && echo "$OLD" || echo "$NEW")
          rm -f "$W/ledger.db"*
          i=$("$b/bench/hwca_issue_bench" "$W/ca-$algo.pem" "$(uri "$algo")" "$W/ledger.db" "$t" "$SECS" 12000 "$batch" | field per_second)
          echo "{\"name\":\"issuance $algo vs raw\",\"build\":\"$side\",\"rep\":$rep,\"workers\":$t,\"batch\":$batch,\"hwca_per_second\":$i,\"raw_per_second\":$r,\"ratio\":$(ratio "$i" "$r")}"
        done
      done
    done
  done
done
