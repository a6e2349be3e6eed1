#!/usr/bin/env bash
# A CPU profile of the Mycel sidecar pair under one of the harness's loads,
# as a flamegraph SVG: runs `mycel-bench SCENARIO --configs mycel ...`,
# attaches `perf record` (DWARF call graphs; the release profile keeps line
# tables) to every mycel-proxy once the load has run for a few seconds,
# and folds the samples with inferno (OUT.folded beside OUT.svg).
#
#   bench/profile.sh OUT.svg SECONDS -- throughput --full
#
# Needs root (or perf_event_paranoid <= 1), perf (Debian: linux-perf) and
# inferno (`cargo install inferno`; found on PATH or in
# ~/.cache/mycel/tools/inferno/bin). Extra proxy flags to profile a
# setting go in MYCEL_BENCH_PROXY_ARGS, as for the harness itself.
# MYCEL_PROFILE_DELAY (seconds, default 5) is the wait between the proxies'
# start and the recording: short for a scenario whose load is short (bulk).
set -euo pipefail

usage() { echo "usage: $0 OUT.svg SECONDS -- SCENARIO [mycel-bench args]" >&2; exit 2; }
[ $# -ge 4 ] && [ "$3" = "--" ] || usage
out=$1 secs=$2
shift 3
case $secs in ''|*[!0-9]*) usage ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
bench=$repo/target/release/mycel-bench
[ -x "$bench" ] || { echo "no $bench: cargo build --release -p mycel-bench first" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
PATH=$PATH:$HOME/.cache/mycel/tools/inferno/bin
command -v inferno-flamegraph >/dev/null || { echo "inferno is not installed (cargo install inferno)" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$bench_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bench" "$@" --configs mycel >"$work/bench.log" 2>&1 &
bench_pid=$!

# The proxies start before the load; wait for both, then for the load.
pids=""
for _ in $(seq 1 600); do
  pids=$(pgrep -d, -x mycel-proxy || true)
  [ "$(echo "$pids" | tr ',' '\n' | grep -c .)" -ge 2 ] && break
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$pids" ] || { echo "no mycel-proxy started" >&2; exit 1; }
sleep "${MYCEL_PROFILE_DELAY:-5}"
echo "profiling mycel-proxy pids $pids for $secs s" >&2
# perf ends early (non-zero) when the proxies exit first: what it took
# is still the profile.
perf record -q -F 499 --call-graph dwarf,32768 -p "$pids" -o "$work/perf.data" -- sleep "$secs" || true
wait "$bench_pid" || { cat "$work/bench.log" >&2; exit 1; }
# The folded stacks are kept beside the SVG, for reading figures out of.
folded=${out%.svg}.folded
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$folded"
inferno-flamegraph --minwidth 0.5 <"$folded" --title "mycel-proxy pair: mycel-bench $* (${MYCEL_BENCH_PROXY_ARGS:-defaults})" >"$out"
tail -n 40 "$work/bench.log"
echo "wrote $out" >&2
