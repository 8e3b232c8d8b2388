#!/usr/bin/env bash
# The main job: builds the examples and runs the quickstart on the in-memory backend (no Redis).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target quickstart
exec ./build/examples/quickstart
