#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test rocketraft: libclang, which the
# `rocksdb` crate's build (bindgen) needs, curl and python3 for bench/compare.sh,
# iproute2 (`ip netns`) for the chaos tool's partitions, and Node.js with npm for the
# stock-client test (t47, the npm package ali-ons).
# Safe to run again: it does nothing when all is there.
#
#   scripts/ensure-deps.sh                      check, and install what is missing
#   scripts/ensure-deps.sh --has-libclang ROOT  exit 0 if the tree under ROOT (a stand-in
#                                               for /) holds what bindgen needs; installs
#                                               nothing (tests/t01_ensure_deps.rs uses it)
set -euo pipefail

# bindgen loads libclang through clang-sys, which looks for files named `libclang.so`,
# `libclang.so.*`, `libclang-<version>.so` or `libclang-<version>.so.*`. Other libraries
# share the prefix and are no use to it: `libclang-cpp.so.14` (LLVM's C++ API, pulled in
# by unrelated packages) once made this check pass on a machine without libclang, and the
# build then failed with "Unable to find libclang". So match the names exactly.
is_libclang_name() {
  case "$1" in
    libclang.so | libclang.so.*) return 0 ;;
    libclang-[0-9]*.so | libclang-[0-9]*.so.*) return 0 ;;
    *) return 1 ;;
  esac
}

# The directories clang-sys searches on Debian-like systems, under ROOT.
libclang_dirs() {
  local root="$1"
  local d
  for d in "$root"/usr/lib/llvm-*/lib "$root"/usr/lib/x86_64-linux-gnu \
           "$root"/usr/lib/aarch64-linux-gnu "$root"/usr/lib64 "$root"/usr/lib \
           "$root"/usr/local/lib "$root"/usr/local/lib64; do
    [ -d "$d" ] && printf '%s\n' "$d"
  done
  return 0
}

has_libclang_library() {
  local root="$1" dir f
  while IFS= read -r dir; do
    for f in "$dir"/libclang*; do
      [ -e "$f" ] || continue
      if is_libclang_name "$(basename "$f")"; then
        return 0
      fi
    done
  done < <(libclang_dirs "$root")
  return 1
}

# bindgen also needs clang's own headers (stddef.h and friends): libclang-common-N-dev.
has_clang_headers() {
  local root="$1" f
  for f in "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h \
           "$root"/usr/lib/clang/*/include/stddef.h \
           "$root"/usr/local/lib/clang/*/include/stddef.h; do
    [ -e "$f" ] && return 0
  done
  return 1
}

has_libclang() {
  local root="$1"
  if [ -z "$root" ] && [ -n "${LIBCLANG_PATH:-}" ]; then
    # The user has pointed clang-sys at a library; trust them, as clang-sys does.
    return 0
  fi
  has_libclang_library "$root" && has_clang_headers "$root"
}

if [ "${1:-}" = "--has-libclang" ]; then
  has_libclang "${2:?--has-libclang needs a root directory}"
  exit $?
fi

missing=()
has_libclang "" || missing+=(libclang-dev)
# bench/compare.sh (the NATS comparison) needs these; most machines have them.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The chaos tool's partition faults create network namespaces with `ip`.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# tests/t47 runs the stock npm RocketMQ client ali-ons (installed from the npm registry).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" libclang-dev "* ]] && ! has_libclang ""; then
    echo "ensure-deps: libclang-dev installed, yet no libclang library and clang headers found" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ensure-deps: cargo not found; install Rust from rustup first" >&2
  exit 1
fi
