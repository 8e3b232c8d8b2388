#!/usr/bin/env bash
# callguard as a user without hiredis gets it: configures the whole project in <work> with
# -DCALLGUARD_WITH_REDIS=OFF and hiredis made unfindable (CMAKE_DISABLE_FIND_PACKAGE_hiredis, and
# hiredis/*.h on the include path that stop the compile if anything includes them), builds the
# example programs, the calls service (on memory) and the memory contract suite, checks that no
# binary loads libhiredis and that the service refuses REDIS_URL and serves on memory, then runs
# that build's unit, contract and consumer tests. <work> is kept between runs (incremental).
#   without_redis.sh <callguard source> <work dir> <c++ compiler> <generator> <build type> [<forward.cmake>]
set -euo pipefail
src=$1 work=$2 cxx=$3 generator=$4 build_type=$5 forward=${6:-}

fail() { echo "without_redis: FAILED: $*" >&2; exit 1; }
quiet() { # <log> <command...>: output kept in <work>/<log>, shown when it fails
  local log=$work/$1
  shift
  "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "$* (log: $log)"; }
}

mkdir -p "$work/poison/hiredis"
for h in hiredis.h async.h read.h sds.h alloc.h; do
  echo '#error "hiredis included in a build without Redis"' >"$work/poison/hiredis/$h"
done
# CXXFLAGS sets CMAKE_CXX_FLAGS of every fresh build tree: this one and its consumers'.
export CXXFLAGS="-I$work/poison"

# The forwarded settings (fmt, prefixes) without this build's hiredis ones.
export CALLGUARD_CONSUMER_OWN_HIREDIS=1
quiet configure.log cmake -S "$src" -B "$work/build" -G "$generator" ${forward:+-C "$forward"} \
  -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$CXXFLAGS" -DCALLGUARD_WITH_REDIS=OFF -DCMAKE_DISABLE_FIND_PACKAGE_hiredis=ON
# No hiredis_DIR, HIREDIS_INCLUDE_DIR, ...: nothing looked for it.
if grep -iE '^[A-Za-z0-9_]*hiredis[A-Za-z0-9_]*:' "$work/build/CMakeCache.txt" |
  grep -v '^CMAKE_DISABLE_FIND_PACKAGE_hiredis:'; then
  fail "hiredis was looked for in a build without Redis"
fi
targets=(quickstart raii_release async_acquire calls_service contract_memory_tests)
quiet build.log cmake --build "$work/build" -j2 --target "${targets[@]}"

bin=$work/build
programs=("$bin/examples/quickstart" "$bin/examples/raii_release/raii_release"
  "$bin/examples/async_acquire/async_acquire"
  "$bin/examples/calls_service/calls_service" "$bin/tests/contract_memory_tests")
for p in "${programs[@]}"; do
  [[ -x $p ]] || fail "$p was not built"
  if ldd "$p" | grep hiredis; then fail "$p loads hiredis"; fi
done
echo "without_redis: built ${targets[*]}; none loads libhiredis"

# The service: REDIS_URL is a configuration error (exit 2, the password not shown); unset, it
# serves on memory and stops cleanly on SIGTERM.
svc=$bin/examples/calls_service/calls_service
rc=0
REDIS_URL=redis://user:s3cret@127.0.0.1:6379 PORT=0 CALLS_DB_PATH="$work/calls.db" "$svc" \
  >"$work/service_redis_url.log" 2>&1 || rc=$?
((rc == 2)) || fail "calls_service with REDIS_URL exited $rc, not 2"
grep -q 'configuration error: REDIS_URL is set, but this calls_service was built without Redis' \
  "$work/service_redis_url.log" || fail "no clear error for REDIS_URL: $(cat "$work/service_redis_url.log")"
if grep -q s3cret "$work/service_redis_url.log"; then fail "the REDIS_URL password was printed"; fi

log=$work/service_memory.log
env -u REDIS_URL PORT=0 HOST=127.0.0.1 CALLS_DB_PATH="$work/calls.db" "$svc" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\) backend=memory .*/\1/p' "$log")
  [[ -n $port ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $port ]] || fail "calls_service did not start on memory: $(cat "$log")"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
reply=$(timeout 10 cat <&3 || true)
exec 3<&-
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
trap - EXIT
[[ $reply == "HTTP/1.1 200"*'"status":"alive"'* ]] || fail "GET /health answered: $reply"
((rc == 0)) || fail "calls_service exited $rc after SIGTERM: $(cat "$log")"
echo "without_redis: calls_service refuses REDIS_URL (exit 2) and serves on memory (port $port)"

# The tests of that build that these targets carry, and its consumers (no callguard::redis, no
# callguard-redis.pc, no libhiredis).
(cd "$work/build" && ctest --output-on-failure -L "unit|contract|consumer" >"$work/ctest.log" 2>&1) ||
  { cat "$work/ctest.log" >&2; fail "ctest in $work/build"; }
grep -E '^[0-9]+% tests passed' "$work/ctest.log"
echo "without_redis: ok"
