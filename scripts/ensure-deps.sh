#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test rocketraft: libclang, which the
# `rocksdb` crate's build (bindgen) needs, curl and python3 for bench/compare.sh, and
# iproute2 (`ip netns`) for the chaos tool's partitions.
# Safe to run again: it does nothing when all is there.
set -euo pipefail

have_libclang() {
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

missing=()
have_libclang || missing+=(libclang-dev)
# bench/compare.sh (the NATS comparison) needs these; most machines have them.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The chaos tool's partition faults create network namespaces with `ip`.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ensure-deps: cargo not found; install Rust from rustup first" >&2
  exit 1
fi
