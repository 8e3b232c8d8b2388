#!/usr/bin/env bash
# Builds a tiny program against callguard the way a user would, then runs it.
#   run.sh find_package|add_subdirectory <callguard source> <callguard build> <work dir> <c++ compiler>
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4 cxx=$5
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
case "$mode" in
find_package)
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S "$here/find_package" -B "$work/build" -DCMAKE_CXX_COMPILER="$cxx" \
        -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  ;;
add_subdirectory)
  cmake -S "$here/add_subdirectory" -B "$work/build" -DCMAKE_CXX_COMPILER="$cxx" \
        -DCALLGUARD_SOURCE_DIR="$src" >/dev/null
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
cmake --build "$work/build" -j2 >/dev/null
"$work/build/consumer"
if [[ -x "$work/build/consumer_redis" ]]; then "$work/build/consumer_redis"; fi
if [[ $mode == find_package ]]; then
  # The pkg-config files must resolve too.
  PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs callguard >/dev/null
  PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs callguard-redis >/dev/null
fi
echo "consumer ($mode): ok"
