# Shared helpers for the shell tests. Source it; it sets `set -euo pipefail`, makes a private work
# folder, and removes it (and stops every process started with `start_bg`) on exit.
set -euo pipefail

: "${HWCA:?HWCA must point at the hwca binary}"
: "${HWCA_SOURCE_DIR:?HWCA_SOURCE_DIR must point at the source tree}"
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

T=$(mktemp -d "${TMPDIR:-/tmp}/hwca-test.XXXXXX")
export HWCA_HOME="$T/home"
mkdir -p "$HWCA_HOME"
unset HWCA_PIN
_bg_pids=()
_cleanup() {
  local rc=$?
  for pid in "${_bg_pids[@]+"${_bg_pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${_bg_pids[@]+"${_bg_pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$T"
  exit $rc
}
trap _cleanup EXIT
cd "$T"

_checks=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { _checks=$((_checks + 1)); }
# The closing line: a test that checked nothing fails.
finish() {
  [ "$_checks" -gt 0 ] || fail "no checks ran"
  echo "$(basename "$0"): $_checks checks passed"
}

# start_bg CMD...: runs CMD in the background and remembers its PID for cleanup.
start_bg() { "$@" & _bg_pids+=($!); }

# make_token LABEL: a fresh SoftHSM2 token in $T/softhsm (one config per test run), user PIN in
# $T/LABEL.pin (0600). Sets SOFTHSM2_CONF. Prints nothing.
make_token() {
  local label=$1
  mkdir -p "$T/softhsm/tokens"
  if [ ! -f "$T/softhsm/softhsm2.conf" ]; then
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
      "$T/softhsm/tokens" > "$T/softhsm/softhsm2.conf"
  fi
  export SOFTHSM2_CONF="$T/softhsm/softhsm2.conf"
  local pin so
  pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  so=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077; printf '%s' "$pin" > "$T/$label.pin"; printf '%s' "$so" > "$T/$label.sopin")
  softhsm2-util --init-token --free --label "$label" --so-pin "$so" --pin "$pin" >/dev/null
}

# key_uri LABEL OBJECT: the PKCS#11 URI of OBJECT on token LABEL, PIN from its file.
key_uri() {
  echo "pkcs11:token=$1;object=$2?module-path=$SOFTHSM_MODULE&pin-source=file:$T/$1.pin"
}

# expect_error DESCRIPTION CMD...: CMD must exit non-zero, print exactly one line starting
# "hwca: error: " on stderr, and nothing on stdout.
expect_error() {
  local desc=$1; shift
  local out err rc=0
  out=$("$@" 2>"$T/.stderr") || rc=$?
  err=$(cat "$T/.stderr")
  [ "$rc" -ne 0 ] || fail "$desc: exit 0"
  [ -z "$out" ] || fail "$desc: wrote to stdout: $out"
  [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || fail "$desc: expected one line on stderr, got: $err"
  [[ "$err" == "hwca: error: "* ]] || fail "$desc: stderr is not 'hwca: error: ...': $err"
  ok
}
