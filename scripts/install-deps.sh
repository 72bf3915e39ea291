#!/usr/bin/env bash
# Installs the Debian packages layercache needs to build and test.
# Runs apt-get only when something is missing; needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libsqlite3-dev libssl-dev libxxhash-dev nlohmann-json3-dev libcli11-dev
  libcurl4-openssl-dev libcpp-httplib-dev nginx-light curl openssl libzstd-dev
  libhiredis-dev redis-server redis-tools
  libgtest-dev libbenchmark-dev clang libclang-rt-14-dev
  python3 python3-dev pybind11-dev python3-numpy python3-torch python3-pytest
  python3-prometheus-client
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
