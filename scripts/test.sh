#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every crate's tests (including the VM lab).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
start=$(date +%s)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
status=0
cargo test --workspace --release --no-fail-fast --exclude udrbd-interop-tests || status=$?
# One VM-lab guest at a time: two TCG guests on a 2-core machine starve each other's time-outs.
cargo test --release --no-fail-fast -p udrbd-interop-tests -- --test-threads=1 || status=$?
echo "test.sh: finished in $(( $(date +%s) - start )) s, status $status"
exit "$status"
