#!/usr/bin/env bash
# swtpm SIGKILLed in the middle of a TPM batch (issue 9): `hwca k8s init` of a generated 1,024-node
# cluster (3 control-plane nodes, 1,021 workers: eight parts of up to 128 workers) with its three CA keys
# in a swtpm; swtpm is killed once the ledger holds the first worker part (250 certificates or more: parts
# are signed and recorded 256 at a time), so the kill falls while later parts are being signed. Parts run
# several at a time (one per core and one more), so the first commits come close together: with 397
# workers (four parts, as this test had) the last part could finish between the poll and the kill.
# hwca stops within the `timeout` (no hang) with exactly one `hwca: error:` line that names the TPM; the ledger passes its integrity check and `hwca audit verify`; every file on disk is
# whole and in the ledger as issued (what was signed before the failure is written, nothing recorded
# is left without its file). swtpm restarted on the same state: init completes, re-issues nothing that
# was complete, and no serial appears twice. tpm2_failures.sh covers the same kill around separate
# `hwca sign` commands; this covers one process's ledger batches and file batches.
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-tpm2.bash" || exit 1
source "$HWCA_SOURCE_DIR/softhsm-tests/cli/lib-crash.bash" || exit 1
export TSS2_LOG=all+NONE

start_swtpm crash
crash_cluster 0 1021 3 "tpm2:file=$T/" ".tss2.pem?tcti=$SWTPM_TCTI" cluster.yaml
LEDGER="$HWCA_HOME/ledger.db"
count() { [ -s "$LEDGER" ] && sqlite3 "$LEDGER" 'SELECT COUNT(*) FROM certificates' 2>/dev/null || echo 0; }

start_bg timeout 120 "$HWCA" k8s init --config cluster.yaml --out out > run1.out 2> run1.err
pid=$!
n=0
for i in $(seq 1 1200); do
  n=$(count)
  [ "${n:-0}" -ge 250 ] && break
  running "$pid" || break
  sleep 0.05
done
running "$pid" || fail "init ended before swtpm was killed ($n certificates): $(cat run1.err)"
[ "${n:-0}" -ge 250 ] || fail "init issued only $n certificates in 60 s"
kill_swtpm "$SWTPM_PID"
t0=$(ms)
rc=0
{ wait "$pid"; } 2>/dev/null || rc=$?
stopped=$(( $(ms) - t0 ))
[ "$rc" != 124 ] || fail "init hung after swtpm was killed (stopped by timeout)"
[ "$rc" = 1 ] || fail "init exited $rc after swtpm was killed: $(cat run1.err)"
[ "$(grep -c . run1.err)" = 1 ] && grep -q '^hwca: error: ' run1.err || fail "expected one 'hwca: error:' line: $(cat run1.err)"
grep -q 'TPM' run1.err || fail "the error does not name the TPM: $(cat run1.err)"
ok
at_kill=$(count)
crash_check kill out > check1.out
crash_ledger_ok
orphaned_now=$(sqlite3 "$LEDGER" "SELECT COUNT(*) FROM certificates WHERE status != 'issued'")
[ "$orphaned_now" = 0 ] || fail "$orphaned_now rows are not 'issued' after the failure"
ok

# swtpm back on the same state: the rest is issued, nothing twice.
restart_swtpm crash
crash_check before out 0 > /dev/null
timeout 120 "$HWCA" k8s init --config cluster.yaml --out out > run2.out 2> run2.err || fail "init after the restart: $(cat run2.err)"
[ ! -s run2.err ] || fail "init after the restart wrote to stderr: $(cat run2.err)"
final=$(crash_check final out)
crash_check after out 0 > /dev/null
crash_ledger_ok
issued2=$(sed -nE 's/^init: ([0-9]+) certificates? issued.*/\1/p' run2.out)
total=$(count)
[ "$total" = $((at_kill + issued2)) ] || fail "ledger: $at_kill rows at the kill + $issued2 issued != $total"
# Every certificate on disk verifies against its CA (the TPM signed them all).
for f in out/nodes/w1/pki/kubelet.crt out/nodes/w1021/pki/kubelet.crt out/pki/apiserver.crt; do
  openssl verify -CAfile out/pki/ca.crt "$f" > /dev/null || fail "$f does not verify"
done
openssl verify -CAfile out/pki/etcd/ca.crt out/nodes/cp2/pki/etcd/peer.crt > /dev/null || fail "etcd peer does not verify"
ok
echo "tpm2_crash: swtpm killed at $at_kill certificates; hwca stopped $stopped ms later: $(cat run1.err)"
echo "tpm2_crash: after the restart: $(tail -1 run2.out); $(grep -v '^orphaned=' <<< "$final")"
finish
