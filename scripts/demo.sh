#!/usr/bin/env bash
# The main job: builds the example calls service and starts it on the in-memory backend
# (no Redis needed) on PORT (default 5050), in the foreground. Ctrl-C stops it gracefully.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target calls_service

port=${PORT:-5050}
base="http://127.0.0.1:$port"
cat <<EOT

calls_service on $base (in-memory backend, MAX_ACTIVE_CALLS=${MAX_ACTIVE_CALLS:-50}). Try:

  curl -s -X POST -d 'CallSid=CA0001&From=%2B972500000001&To=%2B97231234567' $base/webhook/incoming_call
  curl -s -X POST -d 'CallSid=CA0001&CallStatus=completed' $base/webhook/call_status -o /dev/null -w '%{http_code}\n'
  curl -s $base/health/details
  curl -s $base/metrics

Set MAX_ACTIVE_CALLS=1 to hear the Hebrew rejection on the second call; REDIS_URL to share the cap.
EOT
export PORT=$port
export CALLS_CAPACITY_LOG_LEVEL=${CALLS_CAPACITY_LOG_LEVEL:-INFO}
exec ./build/examples/calls_service/calls_service
