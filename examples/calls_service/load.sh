#!/usr/bin/env bash
# Load run for the README: calls_service on a Redis backend (both started here, loopback only),
# driven by wrk with call lifecycles for DURATION seconds (default 10), while /health/details is
# sampled to check the cap. Prints the achieved rate, latency percentiles, non-2xx count and the
# highest active_calls seen.
#   examples/calls_service/load.sh [duration_s] [connections]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${1:-10}
conns=${2:-32}
cap=${MAX_ACTIVE_CALLS:-50}
bin=$root/build/examples/calls_service/calls_service
[[ -x $bin ]] || { echo "build calls_service first (scripts/demo.sh or cmake --build build)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

rport=$((20000 + RANDOM % 20000)); sport=$((40000 + RANDOM % 20000))
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
REDIS_URL="redis://127.0.0.1:$rport" MAX_ACTIVE_CALLS=$cap PORT=$sport HOST=127.0.0.1 \
  CALLS_DB_PATH="$work/calls.db" "$bin" 2>"$work/service.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$sport/health" >/dev/null && break; sleep 0.05; done

# Sample the active count while the load runs (bounded: the sampler stops with the run).
( end=$((SECONDS + duration + 2)); max=0
  while ((SECONDS < end)); do
    a=$(curl -s "http://127.0.0.1:$sport/health/details" | sed -n 's/.*"active_calls":\([0-9]*\).*/\1/p')
    [[ -n $a ]] && ((a > max)) && max=$a
    sleep 0.05
  done; echo "$max" >"$work/max_active" ) &
sampler=$!

wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$root/examples/calls_service/load.lua" \
    "http://127.0.0.1:$sport" | tee "$work/wrk.txt" | grep -E "^LOAD|Latency|Requests/sec"
wait "$sampler"
echo "cap=$cap max_active_seen=$(cat "$work/max_active") redis_zcard_after=$(redis-cli -p "$rport" ZCARD '{calls}:active')"
