#!/usr/bin/env bash
# One command for the benchmark: installs nginx and HAProxy if missing (as
# root), builds the mesh and the harness in release mode, runs a scenario.
#   bash bench/run.sh all --quick      # about 2.5 minutes
#   bash bench/run.sh all --full       # about 40 minutes
#   bash bench/run.sh gateway --quick  # the HTTPS fronts alone, about 35 s
#   bash bench/run.sh pods --quick     # two network namespaces per configuration, the
#                                      # transparent path; as root, about 40 s
set -euo pipefail
cd "$(dirname "$0")/.."

# nginx's stream module is the pods scenario's L4 tunnel (nginx-l4).
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null \
    || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-stream haproxy
    else
        echo "nginx/haproxy missing; install them (apt-get install -y nginx libnginx-mod-stream haproxy) or pass --configs direct,mycel" >&2
    fi
fi

cargo build --release --bins -p mycel-control-plane -p mycel-sidecar -p mycel-cli -p mycel-bench
exec target/release/mycel-bench "${@:-all}"
