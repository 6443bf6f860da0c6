#!/usr/bin/env bash
# The whole test suite, as CI runs it: format check, clippy with warnings denied, every
# test of every crate. Ends with one line "test summary: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-deps.sh

# Reuse a build cache outside the clone when there is one (RocksDB alone takes 10-18
# minutes to build from scratch on two cores); never depend on it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rocketraft/target}"
mkdir -p "$CARGO_TARGET_DIR"
echo "== build cache: $CARGO_TARGET_DIR"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "test summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
