#!/usr/bin/env bash
# Builds a tiny program against callguard the way a user would, then runs it.
#   run.sh MODE <callguard source> <callguard build> <work dir> <c++ compiler> [<forward.cmake>]
#
# MODE:
#   find_package      installs <build> into <work>/prefix (not the prefix it was configured with),
#                     builds with find_package(callguard), then with nothing but the flags that
#                     pkg-config prints for callguard (and callguard-redis), which must name
#                     <work>/prefix
#   add_subdirectory  builds with add_subdirectory(<source>)
#   hiredis_config    as find_package, but hiredis is in a prefix of its own (assembled here from
#                     the system's hiredis, with a CMake config like hiredis 1.x installs) and must
#                     be found through that config, by CMAKE_PREFIX_PATH alone
#
# <forward.cmake> is an initial cache (cmake -C) with what <build> found its dependencies with
# (made by tests/CMakeLists.txt from forward.cmake.in); the consumers configure with it. Whether
# <build> has Redis, its install folders and prefix are read from its CMakeCache.txt: without
# Redis, no callguard::redis, no callguard-redis.pc and no libhiredis may appear.
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4 cxx=$5 forward=${6:-}
here=$(cd "$(dirname "$0")" && pwd)

fail() { echo "consumer ($mode): FAILED: $*" >&2; exit 1; }
cache_value() { sed -n "/^$2:[A-Z]*=/{s/^[^=]*=//;p;q}" "$1/CMakeCache.txt"; }
# A command whose output is kept in <work>/<log> and shown only when it fails.
quiet() {
  local log=$work/$1
  shift
  "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "$* (log: $log)"; }
}
# The real paths of every file a compile command reads (its -M output).
deps_of() { "$@" -M | sed 's/\\$//' | tr -s ' ' '\n' | sed '/^$/d;/:$/d' | xargs -r realpath -m --; }

[[ -f $build/CMakeCache.txt ]] || fail "$build is not a configured build"
case $(cache_value "$build" CALLGUARD_WITH_REDIS) in
ON | on | TRUE | true | 1 | YES | yes) with_redis=1 ;;
*) with_redis=0 ;;
esac
datadir=$(cache_value "$build" CMAKE_INSTALL_DATADIR)
includedir=$(cache_value "$build" CMAKE_INSTALL_INCLUDEDIR)
configured_prefix=$(cache_value "$build" CMAKE_INSTALL_PREFIX)

rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

install_callguard() {
  [[ $(realpath -m "$prefix") != $(realpath -m "$configured_prefix") ]] ||
    fail "the install prefix must differ from the configured one ($configured_prefix)"
  quiet install.log cmake --install "$build" --prefix "$prefix"
}

configure() { # <consumer source dir> [cmake arguments]
  quiet configure.log cmake -S "$1" -B "$work/build" ${forward:+-C "$forward"} \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "${@:2}"
}

build_and_run() {
  quiet build.log cmake --build "$work/build" -j2
  "$work/build/consumer"
  if ((with_redis)); then
    [[ -x $work/build/consumer_redis ]] || fail "callguard::redis is missing from a build with Redis"
    "$work/build/consumer_redis"
  else
    [[ ! -e $work/build/consumer_redis ]] || fail "callguard::redis exists in a build without Redis"
    if ldd "$work/build/consumer" | grep hiredis; then fail "consumer links hiredis in a build without Redis"; fi
  fi
}

# Flags from pkg-config alone: they must point into the temporary prefix, and be enough to build.
check_pkg_config() {
  local pcdir=$prefix/${datadir:-share}/pkgconfig inc
  inc=$(realpath -m "$prefix/${includedir:-include}")
  export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  [[ -f $pcdir/callguard.pc ]] || fail "no callguard.pc in $pcdir"
  local cflags named=0 f
  cflags=$(pkg-config --cflags callguard)
  for f in $cflags; do
    if [[ $f == -I* && $(realpath -m -- "${f#-I}") == "$inc" ]]; then named=1; fi
  done
  ((named)) || fail "pkg-config --cflags callguard ($cflags) does not name $inc"
  echo "consumer ($mode): pkg-config --cflags callguard: $cflags"

  local pcs=(callguard) programs=(consumer)
  if ((with_redis)); then
    pcs+=(callguard-redis) programs+=(consumer_redis)
  else
    [[ ! -e $pcdir/callguard-redis.pc ]] || fail "callguard-redis.pc installed without Redis"
  fi
  local i
  for i in "${!pcs[@]}"; do
    local pc=${pcs[i]} program=${programs[i]}
    # shellcheck disable=SC2046 # the flags are meant to split
    deps_of "$cxx" $(pkg-config --cflags "$pc") "$here/$program.cpp" >"$work/pc_$program.deps"
    grep -qx "$inc/callguard/callguard.hpp" "$work/pc_$program.deps" ||
      fail "$program compiled with pkg-config's flags did not read $inc/callguard/callguard.hpp"
    # shellcheck disable=SC2046
    quiet "pc_$program.log" "$cxx" $(pkg-config --cflags "$pc") "$here/$program.cpp" \
      -o "$work/pc_$program" $(pkg-config --libs "$pc")
    "$work/pc_$program"
  done
}

# hiredis in a prefix of its own, laid out as hiredis 1.x installs itself (headers, the shared
# library, share/hiredis/hiredis-config.cmake with an imported target hiredis::hiredis), made from
# the system's hiredis: only API common to 0.14 and 1.x is used, so its version does not matter.
make_hiredis_prefix() { # <folder>
  local dir=$1 header lib soname major minor patch
  header=$(printf '#include <hiredis/hiredis.h>\n' | deps_of "$cxx" -x c++ - | grep -m1 '/hiredis/hiredis\.h$') ||
    fail "no hiredis/hiredis.h on the compiler's include path"
  lib=$(realpath -e "$("$cxx" -print-file-name=libhiredis.so)" 2>/dev/null) ||
    fail "no libhiredis.so on the compiler's library path"
  soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [[ -n $soname ]] || soname=$(basename "$lib")
  major=$(sed -n 's/^#define HIREDIS_MAJOR \([0-9]*\).*/\1/p' "$header")
  minor=$(sed -n 's/^#define HIREDIS_MINOR \([0-9]*\).*/\1/p' "$header")
  patch=$(sed -n 's/^#define HIREDIS_PATCH \([0-9]*\).*/\1/p' "$header")
  mkdir -p "$dir/include" "$dir/lib" "$dir/share/hiredis"
  cp -r "$(dirname "$header")" "$dir/include/hiredis"
  cp "$lib" "$dir/lib/$soname"
  ln -sf "$soname" "$dir/lib/libhiredis.so"
  cat >"$dir/share/hiredis/hiredis-config.cmake" <<EOF
# hiredis $major.$minor.$patch in a prefix of its own, configured the way hiredis 1.x installs
# itself (made by callguard's tests/consumer/run.sh from the system's hiredis).
get_filename_component(_hiredis_prefix "\${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(NOT TARGET hiredis::hiredis)
  add_library(hiredis::hiredis SHARED IMPORTED)
  set_target_properties(hiredis::hiredis PROPERTIES
    IMPORTED_LOCATION "\${_hiredis_prefix}/lib/$soname"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_hiredis_prefix}/include")
endif()
set(hiredis_INCLUDE_DIRS "\${_hiredis_prefix}/include")
set(hiredis_LIBRARIES hiredis::hiredis)
EOF
  cat >"$dir/share/hiredis/hiredis-config-version.cmake" <<EOF
set(PACKAGE_VERSION "$major.$minor.$patch")
if(PACKAGE_FIND_VERSION AND PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF
  echo "consumer ($mode): hiredis $major.$minor.$patch in its own prefix $dir"
}

case "$mode" in
find_package)
  install_callguard
  CALLGUARD_CONSUMER_PREFIX_PATH=$prefix configure "$here/find_package"
  build_and_run
  check_pkg_config
  ;;
add_subdirectory)
  configure "$here/add_subdirectory" -DCALLGUARD_SOURCE_DIR="$src"
  build_and_run
  ;;
hiredis_config)
  ((with_redis)) || fail "needs a build with Redis"
  hiredis=$work/hiredis
  make_hiredis_prefix "$hiredis"
  install_callguard
  # Only the prefixes: none of <build>'s own hiredis settings (CALLGUARD_CONSUMER_OWN_HIREDIS).
  CALLGUARD_CONSUMER_PREFIX_PATH="$prefix;$hiredis" CALLGUARD_CONSUMER_OWN_HIREDIS=1 \
    configure "$here/find_package"
  found=$(cache_value "$work/build" hiredis_DIR)
  [[ $found == "$hiredis/share/hiredis" ]] ||
    fail "hiredis_DIR is '$found': hiredis was not found through $hiredis/share/hiredis"
  echo "consumer ($mode): find_dependency(hiredis) used $found"
  build_and_run
  grep -qF -- "$hiredis/include" "$work/build/compile_commands.json" ||
    fail "consumer_redis was not compiled with $hiredis/include"
  ldd "$work/build/consumer_redis" | grep -F "=> $hiredis/lib/" ||
    fail "consumer_redis does not load libhiredis from $hiredis/lib: $(ldd "$work/build/consumer_redis" | grep hiredis)"
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
echo "consumer ($mode): ok"
