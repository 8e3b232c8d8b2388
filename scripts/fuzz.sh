#!/usr/bin/env bash
# Longer fuzzing runs than CI's: builds the libFuzzer targets with clang in build-fuzz/ and runs
# each for SECONDS (default 300), starting from the checked-in seeds and past findings. New
# corpus entries stay in build-fuzz/fuzz/corpus-long-<target>/; a crash leaves its input there too.
#   scripts/fuzz.sh [seconds] [target...]      targets: twiml env_config redis_url form_body media_message
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-300}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(twiml env_config redis_url form_body media_message)
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLGUARD_BUILD_FUZZERS=ON \
  -DCALLGUARD_BUILD_TESTS=OFF -DCALLGUARD_BUILD_EXAMPLES=OFF -DCALLGUARD_BUILD_BENCH=OFF \
  -DCALLGUARD_INSTALL=OFF -DCALLGUARD_WARNINGS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)"
for t in "${targets[@]}"; do
  dir=build-fuzz/fuzz/corpus-long-$t
  mkdir -p "$dir"
  cp -n fuzz/corpus/"$t"/* "$dir"/ 2>/dev/null || true
  echo "=== fuzz_$t for ${seconds}s"
  (cd build-fuzz/fuzz && ./fuzz_"$t" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
     -artifact_prefix="corpus-long-$t/" "corpus-long-$t" "$root/fuzz/regressions/$t" 2>&1 | tail -12)
done
