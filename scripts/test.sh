#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs every test:
#   1. the Release build: every unit, conformance and interop test (ctest, both cores);
#   2. the ASan+UBSan build: the same suite again under the sanitizers.
# HWCA_TEST_SKIP_ASAN=1 runs step 1 only (for a quick local loop; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

run_suite() {
  local dir=$1
  echo "== tests: $dir"
  ctest --test-dir "$dir" -j "$(nproc)" --output-on-failure --timeout 900
}

release=$(bash scripts/build.sh release | tail -n1)
run_suite "$release"

if [ "${HWCA_TEST_SKIP_ASAN:-0}" != 1 ]; then
  asan=$(bash scripts/build.sh asan | tail -n1)
  # Leaks inside the PKCS#11 module and libp11 are theirs, not ours; see softhsm-tests/lsan.supp.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/softhsm-tests/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_suite "$asan"
fi
echo "all test suites passed"
