#!/usr/bin/env bash
# Installs (with apt-get) whatever the build, the tests and the examples need and is missing.
# Idempotent: installs nothing when everything is there.
set -euo pipefail

packages=(
  cmake g++ make pkg-config git          # toolchain
  libfmt-dev libhiredis-dev              # the library
  doctest-dev libbenchmark-dev           # tests, benchmarks
  clang libclang-rt-14-dev               # sanitizer and fuzzing runtimes
  redis-server redis-tools               # real servers for the Redis tests, redis-benchmark
  postgresql libpq-dev                   # the PostgreSQL call log (libpq) and a real server for its tests
  libboost-dev libssl-dev libsqlite3-dev nlohmann-json3-dev   # the example service
  openssl                                # test certificates (a test CA) for the WhatsApp sender's HTTPS
  prometheus                             # promtool checks /metrics and tests the alerting rules
  curl procps psmisc                     # scripts and process control
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node (for Twilio's own helper library, used to make signature vectors): any install that has
# `node` and `npm` will do; machines with NodeSource's nodejs already bundle npm.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's redis-server and postgresql services are not ours: tests start their own servers.
for service in redis-server postgresql; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
# Twilio's official helper library, only for the service tests' signature vectors (npm registry).
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -d "$root/tests/service/node/node_modules/twilio" ]]; then
  echo "deps: installing the npm test helpers in tests/service/node"
  (cd "$root/tests/service/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "deps: ok"
