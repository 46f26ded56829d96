# Helpers for the TPM 2.0 shell tests (softhsm-tests/cli/tpm2_*.sh): a private swtpm per test run.
# Source it after lib.bash; it uses lib.bash's `fail`, `start_bg` and `$T`.
# shellcheck source=../../scripts/ports.bash
source "$HWCA_SOURCE_DIR/scripts/ports.bash"

# start_swtpm NAME: starts a fresh swtpm with its state in $T/swtpm-NAME on two free loopback ports
# (server P, control P+1) and waits (at most ~10 s) until it answers. Sets SWTPM_PID, SWTPM_PORT and
# SWTPM_TCTI ("swtpm:host=127.0.0.1,port=P"). The process is stopped by lib.bash's cleanup (by PID).
start_swtpm() {
  local name=$1 attempt port
  mkdir -p "$T/swtpm-$name"
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port=$(random_port)
    if port_used "$port" || port_used $((port + 1)); then continue; fi
    if _launch_swtpm "$name" "$port"; then return 0; fi
  done
  fail "swtpm would not start (see $T/swtpm-$name.log)"
}

# restart_swtpm NAME: starts swtpm NAME again on the same port with the same state (after kill_swtpm).
restart_swtpm() {
  local name=$1 attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if _launch_swtpm "$name" "$SWTPM_PORT"; then return 0; fi
    sleep 0.2
  done
  fail "swtpm would not restart (see $T/swtpm-$name.log)"
}

# kill_swtpm [PID]: SIGKILL (as a crash would), and reap it.
kill_swtpm() {
  local pid=${1:-$SWTPM_PID}
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# tpm_handle_uri HANDLE [AUTHFILE] / tpm_file_uri PATH [AUTHFILE]: key URIs on the current swtpm.
tpm_handle_uri() {
  local uri="tpm2:handle=$1?tcti=$SWTPM_TCTI"
  [ -z "${2:-}" ] || uri="$uri&pin-source=file:$2"
  echo "$uri"
}
tpm_file_uri() {
  local uri="tpm2:file=$1?tcti=$SWTPM_TCTI"
  [ -z "${2:-}" ] || uri="$uri&pin-source=file:$2"
  echo "$uri"
}

# tpm_lockout_counter: the TPM's dictionary-attack failure count (tpm2-tools), e.g. 0x0.
tpm_lockout_counter() {
  TPM2TOOLS_TCTI=$SWTPM_TCTI tpm2_getcap properties-variable 2>/dev/null | awk '/TPM2_PT_LOCKOUT_COUNTER/ {print $2}'
}

_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_launch_swtpm() {
  local name=$1 port=$2 i pid
  start_bg swtpm socket --tpm2 --tpmstate "dir=$T/swtpm-$name" \
    --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
    --flags not-need-init,startup-clear >> "$T/swtpm-$name.log" 2>&1
  pid=$!
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 1; }
    if _port_open "$port"; then
      SWTPM_PID=$pid
      SWTPM_PORT=$port
      SWTPM_TCTI="swtpm:host=127.0.0.1,port=$port"
      return 0
    fi
    sleep 0.1
  done
  kill_swtpm "$pid"
  return 1
}
