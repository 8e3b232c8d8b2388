#!/usr/bin/env bash
# The soak, longer than the 30 s version in scripts/test.sh: two calls_service instances on one
# real redis-server, call lifecycles at a steady rate, random Redis faults; prints the report
# (lifecycles, faults, peak live slots against the cap, RSS and file descriptors before/after).
#   scripts/soak.sh [seconds]      default 300
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-300}
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target service_soak_tests calls_service
CALLGUARD_SOAK_SECONDS=$seconds ./build/tests/service/service_soak_tests
