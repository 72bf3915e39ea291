#!/usr/bin/env bash
# Installs the built layercache into a temporary prefix and builds a small
# consumer against it twice: with find_package(layercache) and with
# pkg-config. Both must compile, link and run (a cache round trip).
# Usage: install_consume_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" --component dev >/dev/null
test -f "$prefix"/lib*/cmake/layercache/layercacheConfig.cmake
test -f "$prefix"/lib*/cmake/layercache/layercacheConfigVersion.cmake

echo "--- find_package(layercache)"
cmake -S "$src/tests/install/consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/consumer" "$work/cache-cmake"

echo "--- pkg-config"
export PKG_CONFIG_PATH=$(echo "$prefix"/lib*/pkgconfig)
pkg-config --exists --print-errors layercache
test "$(pkg-config --modversion layercache)" = "$(sed -n 's/^#define LAYERCACHE_VERSION "\(.*\)"/\1/p' "$prefix/include/layercache/version.h")"
# shellcheck disable=SC2046
c++ -std=c++20 -o "$work/consumer-pc" "$src/tests/install/consumer/main.cc" \
  $(pkg-config --cflags --libs layercache)
"$work/consumer-pc" "$work/cache-pc"

echo "--- add_subdirectory builds the library only"
mkdir -p "$work/sub"
cat >"$work/sub/CMakeLists.txt" <<CML
cmake_minimum_required(VERSION 3.20)
project(sub LANGUAGES CXX)
add_subdirectory("$src" layercache)
foreach(t layercache_cli cli_test _core micro_bench)
  if(TARGET \${t})
    message(FATAL_ERROR "add_subdirectory(layercache) defined \${t}")
  endif()
endforeach()
CML
cmake -S "$work/sub" -B "$work/sub-build" >/dev/null
echo "install and consume: ok"
