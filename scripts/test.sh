#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every crate's tests (including the VM lab).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
start=$(date +%s)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release --no-fail-fast
echo "test.sh: finished in $(( $(date +%s) - start )) s"
