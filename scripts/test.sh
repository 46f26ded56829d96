#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs every test:
#   1. the Release build: every unit, conformance and interop test (ctest, both cores);
#   2. the ASan+UBSan build (clang): the same suite again under the sanitizers;
#   3. every libFuzzer target for a short, bounded time (fuzz/run --ci, about 90 seconds in all), built
#      in that same ASan+UBSan folder (scripts/build.sh asan builds the targets too).
# HWCA_TEST_SKIP_ASAN=1 / HWCA_TEST_SKIP_FUZZ=1 leave out step 2 / 3 (for a quick local loop; CI
# never sets them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

total=0
run_suite() {
  local dir=$1 log n
  echo "== tests: $dir"
  log=$(mktemp)
  ctest --test-dir "$dir" -j "$(nproc)" --output-on-failure --timeout 900 | tee "$log"
  n=$(sed -nE 's/^100% tests passed, 0 tests failed out of ([0-9]+)$/\1/p' "$log")
  rm -f "$log"
  [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "no tests ran in $dir" >&2; exit 1; }
  total=$((total + n))
}

release=$(bash scripts/build.sh release | tail -n1)
run_suite "$release"

asan=
if [ "${HWCA_TEST_SKIP_ASAN:-0}" != 1 ] || [ "${HWCA_TEST_SKIP_FUZZ:-0}" != 1 ]; then
  asan=$(bash scripts/build.sh asan | tail -n1)
fi
if [ "${HWCA_TEST_SKIP_ASAN:-0}" != 1 ]; then
  # Leaks inside the PKCS#11 module and libp11 are theirs, not ours; see softhsm-tests/lsan.supp.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/softhsm-tests/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_suite "$asan"
fi
if [ "${HWCA_TEST_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz: every target, briefly (fuzz/run --ci)"
  HWCA_FUZZ_BUILD=$PWD/$asan bash fuzz/run --ci
fi
fuzz_targets=$(ls fuzz/targets/*.cpp 2>/dev/null | wc -l)
[ "${HWCA_TEST_SKIP_FUZZ:-0}" = 1 ] && fuzz_targets=0
echo "all test suites passed (ctest runs and $fuzz_targets fuzz targets)"
echo "$((total + fuzz_targets)) passed, 0 failed"
