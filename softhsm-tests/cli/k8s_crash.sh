#!/usr/bin/env bash
# Crash consistency (issue 9): `hwca k8s init` of a generated 2,000-node cluster (3 control-plane nodes,
# 1,997 workers, ECDSA-P256 leaves, the CA keys in a fresh SoftHSM2 token) SIGKILLed at random moments,
# 20 times (as the issue asks), each run continuing in the same folder and ledger where the last one
# stopped: every other run at a random moment between 50 ms and the full-run time, the others a random
# 0-200 ms after a ledger commit (where orphaned rows arise; a resumed run spends its first seconds reading
# what is done, which random moments alone mostly hit). When a run completes before its kill, the cluster
# file switches between two worker IP schemes, so that the next runs re-issue every kubelet serving
# certificate (superseded rows, which must never be marked orphaned). After every kill: the ledger passes `PRAGMA integrity_check` and
# `hwca audit verify`; every file is whole (no partial file under a final name: temporaries are
# ".NAME.tmp.XXXXXX"); every certificate on disk is in the ledger as issued; no serial or request id
# twice. At the end a last init completes: it re-issues nothing that was complete and up to date on
# disk, removes every temporary, and every ledger row whose certificate never reached a file is marked
# orphaned (and only those), its file now holding a new serial. The checks are in lib-crash.bash.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-crash.bash" || exit 1

make_token crash
PREFIX="pkcs11:token=crash;object="
SUFFIX="?module-path=$SOFTHSM_MODULE&pin-source=file:$T/crash.pin"
crash_cluster 0 1997 3 "$PREFIX" "$SUFFIX" cluster-0.yaml
crash_cluster 1 1997 3 "$PREFIX" "$SUFFIX" cluster-1.yaml
START=$(ms)

# The kills fall between 50 ms and the full-run time: first estimated by an uninterrupted run of a tenth
# of the cluster (its own ledger and folder; it generates the CA keys in the token), then measured again
# by every run that completes.
crash_cluster 0 197 3 "$PREFIX" "$SUFFIX" ref.yaml
t0=$(ms)
HWCA_HOME="$T/ref-home" "$HWCA" k8s init --config ref.yaml --out ref > ref.log 2> ref.err || fail "reference init: $(cat ref.err)"
FULL=$(( ($(ms) - t0) * 10 ))
grep -q '^init: 41[0-9] certificates issued, 0 kept' ref.log || fail "reference init: $(tail -1 ref.log)"
ok

LEDGER="$HWCA_HOME/ledger.db"
certificates() { { [ -s "$LEDGER" ] && sqlite3 "$LEDGER" 'SELECT COUNT(*) FROM certificates' 2>/dev/null; } || echo 0; }
state=0 kills=0 completes=0 iter=0
while [ "$kills" -lt 20 ] && [ "$iter" -lt 60 ]; do
  iter=$((iter + 1))
  before=$(certificates)
  t0=$(ms)
  start_bg "$HWCA" k8s init --config "cluster-$state.yaml" --out out > run.log 2> run.err
  pid=$!
  if [ $((iter % 2)) = 1 ]; then
    # Odd runs: a random 0-200 ms after the ledger's certificate count grows, inside the window between a
    # ledger commit and the renames of that part's files (where orphaned rows come from).
    after=$(( RANDOM % 200 ))
    deadline=$(( t0 + 3 * FULL + 5000 ))
    while running "$pid" && [ "$(ms)" -lt "$deadline" ] && [ "$(certificates)" -le "$before" ]; do sleep 0.02; done
    ended=$(ms)
    running "$pid" && sleep "0.$(printf '%03d' "$after")"
    when="$after ms after a ledger commit ($(( $(ms) - t0 )) ms)"
  else
    # Even runs: a random moment between 50 ms and the full-run time.
    delay=$(( 50 + (RANDOM * 32768 + RANDOM) % (FULL - 49) ))
    while running "$pid" && [ $(( $(ms) - t0 )) -lt "$delay" ]; do sleep 0.02; done
    ended=$(ms)
    when="after $delay ms"
  fi
  kill -KILL "$pid" 2>/dev/null || true
  rc=0
  { wait "$pid"; } 2>/dev/null || rc=$?
  if [ "$rc" = 137 ]; then
    kills=$((kills + 1))
    what="killed $when"
  elif [ "$rc" = 0 ]; then
    [ ! -s run.err ] || fail "run $iter completed but wrote to stderr: $(cat run.err)"
    completes=$((completes + 1))
    FULL=$(( ended - t0 ))
    state=$((1 - state))
    what="completed in $FULL ms ($(tail -1 run.log | cut -d';' -f1))"
  else
    fail "run $iter (killed $when) exited $rc: $(cat run.err)"
  fi
  line=$(crash_check kill out)
  crash_ledger_ok
  echo "run $iter, $(( ($(ms) - START) / 1000 )) s: $what: $line"
done
[ "$kills" -ge 20 ] || fail "only $kills runs were killed mid-way in $iter runs"
ok

# The last run completes the rest.
crash_check before out "$state" > /dev/null
"$HWCA" k8s init --config "cluster-$state.yaml" --out out > final.log 2> final.err || fail "final init: $(cat final.err)"
[ ! -s final.err ] || fail "final init wrote to stderr: $(cat final.err)"
final=$(crash_check final out)
crash_check after out "$state" > /dev/null
crash_ledger_ok
orphaned=$(sed -n 's/^orphaned=//p' <<< "$final")
[ "$orphaned" -gt 0 ] || fail "no ledger row was orphaned in $kills kills"
marked=$(sqlite3 "$HWCA_HOME/ledger.db" "SELECT COUNT(*) FROM audit_events WHERE kind = 'certificate-orphaned'")
[ "$marked" = "$orphaned" ] || fail "$orphaned orphaned rows but $marked certificate-orphaned audit events"
ok
echo "k8s_crash: $iter runs: $kills killed, $completes completed; final: $(tail -1 final.log)"
echo "k8s_crash: $(grep -v '^orphaned=' <<< "$final"); $orphaned rows marked orphaned; $(( ($(ms) - START) / 1000 )) s"
finish
