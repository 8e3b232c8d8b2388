#!/usr/bin/env bash
# Puts the Redis backend next to redis-benchmark and next to a peer library (npm redis-semaphore)
# on the same server, in the same run.
#
#   bench/compare.sh [--quick] [--plot out.png] [path/to/bench_limiter]
#   bench/compare.sh --server-time [--quick] [path/to/bench_limiter]   (only the server's time)
#   bench/compare.sh --replot data.txt out.png      (redraw a saved run's plot)
#
# Starts its own redis-server on a free loopback port, then measures:
#   - redis-benchmark: EVALSHA of a trivial script and of our acquire script, -c 1/16/64,
#     pipelined (-P 16) and not (-P 1);
#   - bench_limiter: acquire+release pairs (and acquire p50/p99) over the Redis backend, in its
#     default multiplexed mode and in pooled mode, with 1, 16 and 64 caller threads, and acquire
#     cost with 15 / 1k / 100k / 1M slots held;
#   - our async API: bench_limiter's `acquire_release_async/redis/<C>` benchmarks (C = 1, 16, 64
#     coroutines on one io_context thread, counters `pairs/s` and `acquire_p50_us`), when that
#     bench_limiter has them ("not measured" otherwise);
#   - the peer: npm redis-semaphore's `Semaphore` over ioredis (bench/peer, installed here with
#     `npm ci` into bench/peer/node_modules), acquire+release pairs from 1, 16 and 64 async
#     workers on one Node thread;
#   - the server's own time per acquire, release and pair (INFO commandstats), ours
#     (`bench_limiter --server-time`: under the async API's load, 16 coroutines on one thread,
#     the shape of the peer's load, and pairs from 16 threads beside it) and the peer's, with no
#     tenant and with a tenant (the peer: a tenant's semaphore, then the global one);
# and prints tables with the ratios. Medians of --repetitions runs (3; 1 with --quick).
# --plot draws pairs/s against callers into a PNG (needs gnuplot) and keeps its data next to it
# (out.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
draw() { # data.txt out.png: columns callers, ours multiplexed, ours pooled, redis-benchmark
  # acquire script as pairs (EVALSHA/s / 2) blocking and pipelined, redis-semaphore, ours async
  # (NaN where not measured)
  command -v gnuplot >/dev/null || { echo "compare.sh: plotting needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 2; }
  local async_plot=
  if awk 'NF >= 7 && $7 != "NaN" {found = 1} END {exit !found}' "$1"; then
    async_plot=', "" using 1:7 with linespoints lw 2 title "callguard, async API (coroutines, one thread)"'
  fi
  gnuplot <<EOF
set terminal pngcairo size 900,520 font ",11"
set output "$2"
set title "acquire+release pairs/s vs concurrent callers (one redis-server, 2 cores)"
set xlabel "callers (threads / coroutines / Node workers / redis-benchmark -c)"
set ylabel "pairs/s"
set logscale x 2
set xrange [0.8:90]
set yrange [0:*]
set xtics (1, 16, 64)
set key top left opaque box
set grid
plot "$1" using 1:2 with linespoints lw 2 title "callguard, blocking, multiplexed (default)", \
     "" using 1:3 with linespoints lw 2 title "callguard, blocking, pooled", \
     "" using 1:6 with linespoints lw 2 dt 4 title "npm redis-semaphore (ioredis, one Node thread)", \
     "" using 1:4 with linespoints dt 2 title "redis-benchmark, acquire script, -P 1 (EVALSHA/s / 2)", \
     "" using 1:5 with linespoints dt 3 title "redis-benchmark, acquire script, -P 16 (EVALSHA/s / 2)"$async_plot
EOF
  echo "plot: $2"
}

quick=0
plot=
server_time_only=0
while (($#)); do
  case $1 in
    --quick) quick=1; shift ;;
    --plot) plot=$2; shift 2 ;;
    --server-time) server_time_only=1; shift ;;
    --replot) draw "$2" "$3"; exit 0 ;;
    *) break ;;
  esac
done
bench=${1:-$here/../build/bench/bench_limiter}
[[ -x $bench ]] || { echo "compare.sh: $bench not built (cmake --build build --target bench_limiter)" >&2; exit 2; }
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "compare.sh: redis-server/redis-benchmark missing: run scripts/deps.sh" >&2; exit 2
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "compare.sh: node/npm missing (the peer, redis-semaphore, runs on Node): run scripts/deps.sh" >&2; exit 2
fi

if ((quick)); then
  reps=1; n=20000; min_time=0.1; held_max=1000; seconds=0.5
else
  reps=3; n=50000; min_time=1; held_max=1000000; seconds=2
fi

# The peer, from the npm registry, into a folder of its own (versions fixed by its lock file).
peer=$here/peer
if [[ ! -f $peer/node_modules/redis-semaphore/package.json || ! -f $peer/node_modules/ioredis/package.json ]]; then
  echo "compare.sh: installing the peer (npm ci in bench/peer)" >&2
  (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

work=$(mktemp -d)
pid=
cleanup() { if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# A free port: let redis-server try random ones until one binds (bounded). The server gets a
# session of its own, as a service has: with the kernel's autogroup scheduling, a server in the
# benchmark's session gets one CPU share together with all the client's threads, which no deployment
# does (measured: 16 blocking callers did 33-35k pairs/s against 40-44k with the server apart).
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  setsid redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
               --logfile "$work/redis.log" --daemonize no >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  kill -9 "$pid" 2>/dev/null || true; pid=
done
[[ -n $pid ]] || { echo "compare.sh: could not start redis-server" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
csv_field() { # redis-benchmark --csv: field 2 rps, 5 p50 ms
  tail -n 1 | tr -d '"' | awk -F, -v f="$1" '{print $f}'
}
json_field() { # field name -> its number in pairs.js's one-line JSON
  sed -n "s/.*\"$1\":\\([0-9.eE+-]*\\).*/\\1/p"
}
field() { # key -> value of key=value in bench_limiter --server-time's lines
  tr ' ' '\n' | sed -n "s/^$1=//p"
}

peer_run() { # pairs.js arguments -> its JSON lines, one per repetition
  for _ in $(seq 1 "$reps"); do
    node "$peer/pairs.js" --port "$port" --seconds "$seconds" "$@"
  done
}

# The server's time per operation, ours and the peer's (a tenant: ours with a capped tenant, the
# peer with a tenant's semaphore and the global one).
server_time() {
  for _ in $(seq 1 "$reps"); do
    REDIS_URL="redis://127.0.0.1:$port" "$bench" --server-time "$seconds"
  done >"$work/st_ours.txt"
  peer_run --callers 16 --server-time >"$work/st_peer.txt"
  peer_run --callers 16 --server-time --tenant >"$work/st_peer_tenant.txt"
  printf '\nServer time per operation (INFO commandstats, microseconds inside the command), medians of %s run(s)\n' "$reps"
  printf 'ours: the async API, 16 coroutines on one thread, as the peer runs (pairs under load;\n'
  printf 'acquire and release apart, 8 calls each), and pairs from 16 threads (the blocking API);\n'
  printf 'redis-semaphore: 16 Node workers, acquire = EVALSHA, release = ZREM. Ours per call, whatever\n'
  printf 'travelled together: "together" is the share of the 16 coroutines'"'"' calls that went as one script\n'
  printf 'call with others; "pair, 1" is one coroutine'"'"'s pair (every call a script call of its own).\n\n'
  printf '%-10s | %9s %9s %9s | %9s %9s %9s | %7s | %11s %8s %8s\n' "" "our acq" "our rel" "our pair" "peer acq" "peer rel" "peer pair" "x pair" "pair, thr." "pair, 1" "together"
  printf '%s\n' "-----------+-------------------------------+-------------------------------+---------+------------------------------"
  for t in 0 1; do
    local peer_file=$work/st_peer.txt label="no tenant"
    ((t)) && peer_file=$work/st_peer_tenant.txt label="tenant"
    local oa or op ot o1 tg pa pr pp
    oa=$(grep "tenant=$t " "$work/st_ours.txt" | field acquire_us | median)
    o1=$(grep "tenant=$t " "$work/st_ours.txt" | field pair_one_us | median)
    tg=$(grep "tenant=$t " "$work/st_ours.txt" | field together | median)
    ot=$(grep "tenant=$t " "$work/st_ours.txt" | field pair_threads_us | median)
    or=$(grep "tenant=$t " "$work/st_ours.txt" | field release_us | median)
    op=$(grep "tenant=$t " "$work/st_ours.txt" | field pair_us | median)
    pa=$(json_field server_acquire_us <"$peer_file" | median)
    pr=$(json_field server_release_us <"$peer_file" | median)
    pp=$(json_field server_pair_us <"$peer_file" | median)
    awk -v l="$label" -v oa="$oa" -v or="$or" -v op="$op" -v ot="$ot" -v o1="$o1" -v tg="$tg" -v pa="$pa" -v pr="$pr" -v pp="$pp" 'BEGIN {
      printf "%-10s | %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f | %7.2f | %11.2f %8.2f %8.2f\n", l, oa, or, op, pa, pr, pp, op / pp, ot, o1, tg }'
    echo "$t $op $pp" >>"$work/st_pairs.txt"
  done
  # The issue's targets are against the peer's plain (no tenant) pair.
  awk 'NR == 1 {plain = $3} {pair[$1] = $2} END {
    printf "\nours / redis-semaphore'"'"'s plain pair: no tenant %.2fx, with a tenant %.2fx\n", pair[0] / plain, pair[1] / plain }' \
    "$work/st_pairs.txt"
}

if ((server_time_only)); then
  server_time
  exit 0
fi

trivial=$(redis-cli -p "$port" SCRIPT LOAD "return 1")
acquire=$(redis-cli -p "$port" SCRIPT LOAD "$("$bench" --print-acquire-script)")

rb() { # callers pipeline script-args... -> "rps p50_us" medians
  local c=$1 p=$2; shift 2
  local rps=() p50=()
  for _ in $(seq 1 "$reps"); do
    local out
    out=$(redis-benchmark -p "$port" -c "$c" -P "$p" -n "$n" -r 1000000 --csv "$@")
    rps+=("$(csv_field 2 <<<"$out")")
    p50+=("$(csv_field 5 <<<"$out")")
  done
  echo "$(printf '%s\n' "${rps[@]}" | median) $(printf '%s\n' "${p50[@]}" | median | awk '{print $1 * 1000}')"
}

declare -A rb_trivial rb_acquire rb_trivial_p16 rb_acquire_p16
for c in 1 16 64; do
  rb_trivial[$c]=$(rb "$c" 1 EVALSHA "$trivial" 0)
  rb_acquire[$c]=$(rb "$c" 1 EVALSHA "$acquire" 4 '{rb}:active' '{rb}:owners' '{rb}:released:current' '{rb}:released:previous' '{rb}' 'CA__rand_int__' 1000000000 7200000 '' 0)
  rb_trivial_p16[$c]=$(rb "$c" 16 EVALSHA "$trivial" 0)
  rb_acquire_p16[$c]=$(rb "$c" 16 EVALSHA "$acquire" 4 '{rbp}:active' '{rbp}:owners' '{rbp}:released:current' '{rbp}:released:previous' '{rbp}' 'CA__rand_int__' 1000000000 7200000 '' 0)
  redis-cli -p "$port" DEL '{rb}:active' '{rbp}:active' >/dev/null
done

# The peer: pairs/s and acquire p50 at 1, 16 and 64 workers.
declare -A peer_pairs peer_p50
for c in 1 16 64; do
  peer_run --callers "$c" >"$work/peer_$c.txt"
  peer_pairs[$c]=$(json_field pairs_per_s <"$work/peer_$c.txt" | median)
  peer_p50[$c]=$(json_field acquire_p50_us <"$work/peer_$c.txt" | median)
done

# Our side: Google Benchmark over the Redis backend, the same server; the async API's benchmarks
# only where this bench_limiter has them.
filter='acquire_release/redis|acquire_release/redis_pooled|acquire_release_held/redis'
has_async=0
if REDIS_URL="redis://127.0.0.1:$port" CALLGUARD_BENCH_MAX_HELD=$held_max "$bench" --benchmark_list_tests 2>/dev/null |
     grep -q '^acquire_release_async/redis/'; then
  has_async=1
  filter="$filter|acquire_release_async/redis"
fi
REDIS_URL="redis://127.0.0.1:$port" CALLGUARD_BENCH_MAX_HELD=$held_max "$bench" \
  --benchmark_filter="($filter)/" \
  --benchmark_min_time="$min_time" --benchmark_repetitions="$reps" \
  --benchmark_format=csv >"$work/ours.csv" 2>"$work/ours.err" || { cat "$work/ours.err" >&2; exit 1; }

# name,iterations,real_time,cpu_time,time_unit,bytes_per_second,items_per_second,label,error_occurred,error_message,"acquire_p50_us","acquire_p99_us","pairs/s"
ours() { # name-pattern column -> median over repetitions
  local pattern=$1 col=$2
  awk -F, -v p="$pattern" -v c="$col" 'NR > 1 && $1 ~ p && $1 !~ /_(mean|median|stddev|cv)"?$/ {print $c}' "$work/ours.csv" | median
}
col() { head -1 "$work/ours.csv" | tr ',' '\n' | grep -n "$1" | head -1 | cut -d: -f1; }
c_pairs=$(col 'pairs/s'); c_p50=$(col 'acquire_p50_us'); c_p99=$(col 'acquire_p99_us')

printf '\ncallguard Redis backend vs redis-benchmark, same redis-server (127.0.0.1:%s), medians of %s run(s)\n\n' "$port" "$reps"
printf '%-7s | %10s %10s %8s %8s | %10s %8s %10s %8s | %7s %7s %7s %7s\n' callers "pairs/s" "cmds/s" "p50 us" "p99 us" \
  "rb triv/s" "p50 us" "rb acq/s" "p50 us" "x triv" "x acq" "p50x tr" "p50x ac"
printf '%s\n' "--------+----------------------------------------+----------------------------------------+--------------------------------"
declare -A mux_pairs mux_p50 async_pairs async_p50
for mode in redis redis_pooled; do
  for c in 1 16 64; do
    name="acquire_release/$mode/0/real_time/threads:$c\""
    o_pairs=$(ours "$name" "$c_pairs"); o_p50=$(ours "$name" "$c_p50"); o_p99=$(ours "$name" "$c_p99")
    read -r t_rps t_p50 <<<"${rb_trivial[$c]}"
    read -r a_rps a_p50 <<<"${rb_acquire[$c]}"
    read -r a16 _ <<<"${rb_acquire_p16[$c]}"
    label=$([[ $mode == redis ]] && echo "$c mux" || echo "$c pool")
    awk -v c="$label" -v pairs="$o_pairs" -v p50="$o_p50" -v p99="$o_p99" -v trps="$t_rps" -v tp50="$t_p50" \
        -v arps="$a_rps" -v ap50="$a_p50" 'BEGIN {
      cmds = 2 * pairs
      printf "%-8s| %10.0f %10.0f %8.1f %8.1f | %10.0f %8.1f %10.0f %8.1f | %7.2f %7.2f %7.2f %7.2f\n", \
        c, pairs, cmds, p50, p99, trps, tp50, arps, ap50, cmds / trps, cmds / arps, p50 / tp50, p50 / ap50
    }'
    echo "$mode $c $o_pairs $a_rps $a16" >>"$work/plot.dat"
    if [[ $mode == redis ]]; then mux_pairs[$c]=$o_pairs; mux_p50[$c]=$o_p50; fi
  done
  if ((has_async)) && [[ $mode == redis ]]; then
    for c in 1 16 64; do
      name="acquire_release_async/redis/$c/"
      async_pairs[$c]=$(ours "$name" "$c_pairs"); async_p50[$c]=$(ours "$name" "$c_p50")
    done
  fi
done
printf '\nmux = the default multiplexed mode (callers share one socket), pool = one connection per caller.\n'
printf 'x triv / x acq = our EVALSHA commands/s (2 per acquire+release pair) over redis-benchmark'"'"'s\n'
printf 'EVALSHA/s (-P 1, same -c) of the trivial script / of our acquire script;\n'
printf 'p50x = our acquire p50 over redis-benchmark'"'"'s EVALSHA p50 (same -c), trivial / acquire script.\n'
printf '\nredis-benchmark pipelined (-P 16): EVALSHA/s trivial / acquire script\n'
for c in 1 16 64; do
  read -r t _ <<<"${rb_trivial_p16[$c]}"; read -r a _ <<<"${rb_acquire_p16[$c]}"
  printf '  -c %-3s %12.0f %12.0f\n' "$c" "$t" "$a"
done

printf '\ncallguard vs npm redis-semaphore (ioredis, one Node thread), pairs/s and acquire p50, same server\n\n'
printf '%-7s | %10s %8s | %10s %8s %6s | %10s %8s %6s | %8s %8s\n' callers "peer/s" "p50 us" "blocking/s" "p50 us" "x peer" \
  "async/s" "p50 us" "x peer" "p50x rb" "async rb"
printf '%s\n' "--------+---------------------+------------------------------+------------------------------+------------------"
for c in 1 16 64; do
  read -r _ t_p50 <<<"${rb_trivial[$c]}"
  if ((has_async)) && [[ -n ${async_pairs[$c]} ]]; then
    ap=${async_pairs[$c]}; a50=${async_p50[$c]}
  else
    ap=; a50=
  fi
  awk -v c="$c" -v pp="${peer_pairs[$c]}" -v p50="${peer_p50[$c]}" -v mp="${mux_pairs[$c]}" -v m50="${mux_p50[$c]}" \
      -v ap="$ap" -v a50="$a50" -v rb50="$t_p50" 'BEGIN {
    if (ap == "") async = sprintf("%10s %8s %6s", "not", "measured", ""); else async = sprintf("%10.0f %8.1f %6.2f", ap, a50, ap / pp)
    asyncx = (a50 == "") ? "" : sprintf("%8.2f", a50 / rb50)
    printf "%-8s| %10.0f %8.1f | %10.0f %8.1f %6.2f | %s | %8.2f %8s\n", c, pp, p50, mp, m50, mp / pp, async, m50 / rb50, asyncx
  }'
done
printf '\nblocking = our multiplexed mode with N threads; async = N coroutines on one io_context thread;\n'
printf 'x peer = our pairs/s over redis-semaphore'"'"'s; p50x rb = our acquire p50 over redis-benchmark'"'"'s\n'
printf 'EVALSHA p50 of the trivial script at the same -c (blocking / async).\n'
((has_async)) || printf '(async: this bench_limiter has no acquire_release_async/redis benchmark: not measured)\n'

server_time

printf '\nacquire+release with N slots held (1 caller): N, pairs/s, acquire p50 us, p99 us\n'
for held in 15 1000 100000 1000000; do
  name="acquire_release_held/redis/$held/"
  v=$(ours "$name" "$c_pairs")
  [[ -z $v ]] && continue
  printf '  %-8s %12.0f %8.1f %8.1f\n' "$held" "$v" "$(ours "$name" "$c_p50")" "$(ours "$name" "$c_p99")"
done

if [[ -n $plot ]]; then
  for c in 1 16 64; do
    echo "peer $c ${peer_pairs[$c]}" >>"$work/plot.dat"
    echo "async $c ${async_pairs[$c]:-NaN}" >>"$work/plot.dat"
  done
  awk '$1 == "redis" {m[$2] = $3; a[$2] = $4; p[$2] = $5} $1 == "redis_pooled" {q[$2] = $3}
       $1 == "peer" {r[$2] = $3} $1 == "async" {s[$2] = $3}
       END {for (c in m) print c, m[c], q[c], a[c] / 2, p[c] / 2, r[c], s[c]}' "$work/plot.dat" | sort -n >"${plot%.png}.txt"
  draw "${plot%.png}.txt" "$plot"
fi
