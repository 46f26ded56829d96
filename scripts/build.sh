#!/usr/bin/env bash
# Configures and builds one configuration: release (default), debug, or asan (ASan + UBSan, Debug, with
# clang: the same folder also builds the libFuzzer targets, so CI compiles hwca once for the sanitizer
# suite and the fuzz run; see docs/testing.md). Prints the build folder on stdout's last line.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-release}
case "$config" in
  release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug) args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) args=(-DCMAKE_BUILD_TYPE=Debug -DHWCA_SANITIZE=ON -DHWCA_FUZZ=ON) ;;
  *) echo "usage: scripts/build.sh [release|debug|asan]" >&2; exit 2 ;;
esac
dir=build/$config
if [ "$config" = asan ]; then
  export CC=clang CXX=clang++
  # A folder configured by another compiler (build/asan was GCC's before) cannot switch: start it again.
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -Eq '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang\+\+(-[0-9.]+)?$' "$dir/CMakeCache.txt"; then
    rm -rf "$dir"
  fi
fi
gen=()
command -v ninja >/dev/null 2>&1 && [ ! -f "$dir/Makefile" ] && gen=(-G Ninja)
cmake -S . -B "$dir" "${gen[@]}" "${args[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)" >&2
echo "$dir"
