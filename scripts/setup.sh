#!/usr/bin/env bash
# Installs what ClusterWS needs on Debian 12 when it is missing:
# redis-server and redis-tools (tests, demo, benchmarks), libhiredis-dev and
# pkg-config (the CHiredis system library), zlib1g-dev (permessage-deflate). Swift itself is expected at
# /opt/swift or on PATH.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists hiredis 2>/dev/null || missing+=(libhiredis-dev)
# zlib (permessage-deflate, through compress-nio).
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's package starts a system redis-server on 6379; ours never needs it
# (tests and the demo start their own on free ports), so leave it alone.
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  echo "setup: swift is at /opt/swift/usr/bin; add it to PATH"
fi
command -v swift >/dev/null 2>&1 || [ -x /opt/swift/usr/bin/swift ] || {
  echo "setup: Swift 6 toolchain not found (expected on PATH or at /opt/swift)" >&2
  exit 1
}
