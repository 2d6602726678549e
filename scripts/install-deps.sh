#!/usr/bin/env bash
# Installs every Debian 12 package shoal needs to build, test and benchmark.
# Idempotent; needs root (or sudo). Nothing is downloaded from elsewhere.
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ clang libclang-rt-14-dev cmake ninja-build ccache pkg-config git
  # libraries (docs/ARCHITECTURE.md, "Dependencies")
  librocksdb-dev libasio-dev libprotobuf-dev protobuf-compiler libfmt-dev libspdlog-dev
  libcli11-dev libtomlplusplus-dev libcpp-httplib-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  # allocators to link into the server (cmake -DSHOAL_MALLOC=jemalloc|mimalloc)
  libjemalloc-dev libmimalloc-dev
  # tests and benchmarks: the real Redis as reference, real clients
  redis-server redis-tools python3 python3-redis python3-pytest procps iptables nodejs node-redis
  # the openssl tool: TLS tests make their certificates with it
  openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
# Debian's redis-server package must not start a system Redis on 6379 here.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
