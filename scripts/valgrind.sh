#!/usr/bin/env bash
# Valgrind memcheck over the token tests: PKCS#11 sessions, ESYS handles and OpenSSL objects must all
# be released. Runs the tokens test binary of a Debug build (scripts/build.sh debug) test case by test
# case under memcheck; any definite or indirect leak, or any memory error, fails.
#
#   scripts/valgrind.sh [BUILD_DIR]          (default: build/debug, built when missing)
#
# Leaks inside libsofthsm2, libp11 and the TSS libraries' own caches are theirs: see
# softhsm-tests/valgrind.supp. Ours get no suppression.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-}
if [ -z "$dir" ]; then dir=$(bash scripts/build.sh debug | tail -n1); fi
bin=$dir/softhsm-tests/hwca_tokens_tests
[ -x "$bin" ] || { echo "valgrind.sh: no $bin" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 2; }

failed=0 count=0
while IFS= read -r name; do
  [ -n "$name" ] || continue
  count=$((count + 1))
  log=$(mktemp)
  if valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --show-leak-kinds=definite,indirect --suppressions=softhsm-tests/valgrind.supp --gen-suppressions=all \
       --num-callers=30 "$bin" "$name" > "$log" 2>&1; then
    echo "ok    $name"
  else
    echo "FAIL  $name"; tail -60 "$log"; failed=$((failed + 1))
  fi
  rm -f "$log"
done < <("$bin" --list-test-names-only 2>/dev/null | grep '^tokens: ')
echo "valgrind: $((count - failed)) passed, $failed failed"
[ "$failed" = 0 ]
