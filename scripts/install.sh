#!/usr/bin/env bash
# Installs what hwca needs to build and test, from Debian 12 packages. Idempotent: a package already
# installed is left alone, and nothing is installed over a kubectl the machine already has.
set -euo pipefail

pkgs=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libssl-dev libp11-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libsqlite3-dev
  libtss2-dev libboost-dev libpq-dev catch2
  # hardware and its tools
  softhsm2 opensc opensc-pkcs11 libp11-kit-dev libengine-pkcs11-openssl swtpm swtpm-tools tpm2-openssl tpm2-tools
  # interop peers used by the tests
  openssl gnutls-bin golang-cfssl etcd-server etcd-client sqlite3 postgresql jq python3 python3-cryptography python3-protobuf python3-yaml curl
)
# kubectl: use the machine's own when there is one; otherwise Debian's kubernetes-client.
command -v kubectl >/dev/null 2>&1 || pkgs+=(kubernetes-client)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "hwca install: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
