#!/usr/bin/env bash
# Mesh two apps of your own on one machine, in local mode:
#   one mycel-controller reading mesh.yaml,
#   one join token per workload (mycelctl token create),
#   two small Python HTTP apps, each beside its own mycel-proxy sidecar,
#   and a curl from one app's side to the other, over mutual TLS.
#
# It builds nothing: build first with `cargo build --workspace --bins`
# (binaries are taken from target/debug of this repository), or point
# --bin-dir at a directory holding mycel-controller, mycel-proxy and mycelctl.
#
# Usage: examples/local/run.sh [--bin-dir DIR] [--check]
#   --check   stop and exit 0 as soon as the curl through the mesh worked
#             (non-interactive; the test suite runs this)
# Addresses can be moved with the environment (defaults in brackets):
#   HELLO_IP [127.0.0.21], CLIENT_IP [127.0.0.22],
#   CONTROLLER_PORT [15010], CONTROLLER_ADMIN_PORT [15014]
# Everything lives in a temporary directory removed on exit (Ctrl-C included).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir="$here/../../target/debug"
check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --check) check=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
bin_dir=$(cd "$bin_dir" 2>/dev/null && pwd) || { echo "error: no directory $bin_dir" >&2; exit 1; }
for b in mycel-controller mycel-proxy mycelctl; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "error: $bin_dir/$b not found: build first with cargo build --workspace --bins, or pass --bin-dir" >&2
        exit 1
    fi
done
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done

hello_ip=${HELLO_IP:-127.0.0.21}
client_ip=${CLIENT_IP:-127.0.0.22}
controller=127.0.0.1:${CONTROLLER_PORT:-15010}
controller_admin=127.0.0.1:${CONTROLLER_ADMIN_PORT:-15014}
# Every workload uses the same ports on its own loopback address, as pods
# do on their own IPs: app 8080, mesh (inbound) 15006, outbound 15001,
# admin 15000.

work=$(mktemp -d "${TMPDIR:-/tmp}/mycel-local.XXXXXX")
data=$work/data
logs=$work/logs
mkdir -p "$data" "$logs"
export NO_COLOR=1     # plain log files
pids=()

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        echo "stopping ${#pids[@]} processes..."
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "error: $*" >&2
    for f in "$logs"/*.log; do
        echo "--- last lines of $(basename "$f")" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

# start NAME COMMAND...: runs COMMAND in the background, output in logs/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$logs/$name.log" 2>&1 &
    pids+=($!)
    echo "started $name (pid $!), log $logs/$name.log"
}

# wait_ok WHAT URL: until URL answers 2xx, for at most 30 s.
wait_ok() {
    for _ in $(seq 300); do
        curl -sf -o /dev/null --max-time 1 "$2" && return 0
        sleep 0.1
    done
    fail "$1 not ready after 30 s ($2)"
}

# 1. The controller: CA and tokens under $data, services from mesh.yaml.
start controller "$bin_dir/mycel-controller" \
    --data-dir "$data" \
    --grpc-addr "$controller" \
    --admin-addr "$controller_admin" \
    --mesh-config "$here/mesh.yaml"
wait_ok controller "http://$controller_admin/ready"

# 2. One join token per workload: its identity (namespace + service
#    account), the labels it registers with, and the address it serves on.
token() { # token NAME IP
    "$bin_dir/mycelctl" token create --data-dir "$data" \
        --namespace demo --service-account "$1" --label "app=$1" --address "$2" \
        >"$work/$1.token" 2>/dev/null
}
token hello "$hello_ip"
token client "$client_ip"

# 3. The apps and their sidecars.
sidecar() { # sidecar NAME IP
    start "$1-proxy" "$bin_dir/mycel-proxy" \
        --controller "$controller" \
        --ca-root "$data/ca/root.pem" \
        --token-file "$work/$1.token" \
        --workload "$1-1" --namespace demo --service-account "$1" --label "app=$1" \
        --address "$2" --app-host "$2" --app-port http:8080 \
        --inbound "$2:15006" --outbound "$2:15001" --admin "$2:15000"
}
for app in hello:"$hello_ip" client:"$client_ip"; do
    name=${app%%:*}
    ip=${app#*:}
    start "$name" python3 "$here/app.py" --name "$name" --host "$ip" --port 8080
    sidecar "$name" "$ip"
done
wait_ok "hello sidecar" "http://$hello_ip:15000/ready"
wait_ok "client sidecar" "http://$client_ip:15000/ready"

# 4. From the client's side, through its sidecar's outbound proxy, to the
#    hello service: client sidecar -> mTLS -> hello sidecar -> hello app.
#    The endpoint appears once the hello sidecar has seen its app answer.
answer=""
for _ in $(seq 100); do
    if answer=$(curl -sS --fail-with-body --max-time 5 -x "http://$client_ip:15001" http://hello.demo/ 2>&1); then
        break
    fi
    sleep 0.2
done
case "$answer" in
    "hello from hello; caller: spiffe://cluster.local/ns/demo/sa/client") ;;
    *) fail "curl through the mesh did not get the expected answer: $answer" ;;
esac
echo
echo "\$ curl -x http://$client_ip:15001 http://hello.demo/"
echo "$answer"
if [ "$check" = 1 ]; then
    echo "check passed"
    exit 0
fi

echo
echo "The mesh is up. Try:"
try() { printf '  %-56s # %s\n' "$1" "$2"; }
try "curl -x http://$client_ip:15001 http://hello.demo/" "client -> hello over mTLS"
try "curl -x http://$hello_ip:15001 http://client.demo/" "hello -> client"
try "curl http://$hello_ip:8080/" "the app directly: no caller identity"
try "curl http://$controller_admin/debug/proxies" "the controller's view of the proxies"
try "curl http://$client_ip:15000/config_dump" "what the client sidecar knows"
try "curl http://$hello_ip:15000/certs" "the hello sidecar's certificate"
echo "  $bin_dir/mycelctl token list --data-dir $data"
echo
echo "Logs: $logs/<name>.log"
echo "Press Ctrl-C to stop everything (the temporary directory is removed)."
# Until Ctrl-C, or until one of the processes stops on its own.
wait -n "${pids[@]}" || true
fail "a process stopped unexpectedly"
