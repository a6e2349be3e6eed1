#!/usr/bin/env bash
# The whole Mycel test suite: builds the binaries the end-to-end suites start
# as real processes, then runs every test in the workspace.
#
# MYCEL_REQUIRE_ALL=1 (set by CI) turns every skipped test into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
# Each end-to-end test starts a dozen processes; two at a time keeps a
# two-core machine responsive enough for the timing the tests assert.
cargo test --workspace --no-fail-fast -- --test-threads=2
