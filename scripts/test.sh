#!/usr/bin/env bash
# The test command: installs what is missing, builds once per configuration (build folders are
# reused), and runs every test: the main build with ctest (unit, contract, concurrency, Redis,
# service, consumer), then the concurrency and contract suites under ThreadSanitizer, then the
# library suites under AddressSanitizer + UndefinedBehaviorSanitizer, then every libFuzzer target
# for a fixed number of inputs (scripts/fuzz.sh runs them longer). Any report fails the run.
#
#   scripts/test.sh            everything
#   scripts/test.sh -L unit    only the main build, passing the arguments to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${CALLGUARD_JOBS:-$(nproc)}

bash scripts/deps.sh

step() { printf '\n=== %s ===\n' "$*"; }

step "build (RelWithDebInfo) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

step "ctest in build/"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600 "$@")

if (($# > 0)); then exit 0; fi

step "ThreadSanitizer build in build-tsan/ (concurrency and contract suites)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLGUARD_SANITIZE=thread \
      -DCALLGUARD_BUILD_EXAMPLES=OFF -DCALLGUARD_BUILD_BENCH=OFF -DCALLGUARD_INSTALL=OFF >/dev/null
cmake --build build-tsan -j"$jobs"
# Any report fails the test that produced it.
(cd build-tsan && TSAN_OPTIONS="halt_on_error=1 abort_on_error=0 exitcode=66" \
   ctest --output-on-failure -j"$jobs" --timeout 900 -L "concurrency|contract")

step "AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/ (library suites)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCALLGUARD_SANITIZE=address,undefined \
      -DCALLGUARD_BUILD_EXAMPLES=OFF -DCALLGUARD_BUILD_BENCH=OFF -DCALLGUARD_INSTALL=OFF >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" UBSAN_OPTIONS="print_stacktrace=1" \
   ctest --output-on-failure -j"$jobs" --timeout 900)

step "libFuzzer targets in build-fuzz/ (clang; a fixed number of runs each)"
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLGUARD_BUILD_FUZZERS=ON \
      -DCALLGUARD_BUILD_TESTS=OFF -DCALLGUARD_BUILD_EXAMPLES=OFF -DCALLGUARD_BUILD_BENCH=OFF \
      -DCALLGUARD_INSTALL=OFF -DCALLGUARD_WARNINGS=OFF >/dev/null
cmake --build build-fuzz -j"$jobs"
(cd build-fuzz && ctest --output-on-failure -j"$jobs" -L fuzz)

step "all tests passed"
