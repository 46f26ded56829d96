#!/usr/bin/env bash
# Configures and builds one configuration: release (default) or asan (ASan + UBSan, Debug).
# Prints the build folder on stdout's last line.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-release}
case "$config" in
  release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug) args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) args=(-DCMAKE_BUILD_TYPE=Debug -DHWCA_SANITIZE=ON) ;;
  *) echo "usage: scripts/build.sh [release|debug|asan]" >&2; exit 2 ;;
esac
dir=build/$config
gen=()
command -v ninja >/dev/null 2>&1 && [ ! -f "$dir/Makefile" ] && gen=(-G Ninja)
cmake -S . -B "$dir" "${gen[@]}" "${args[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)" >&2
echo "$dir"
