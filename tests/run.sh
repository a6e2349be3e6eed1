#!/usr/bin/env bash
# The whole Mycel test suite: builds the binaries the end-to-end suites start
# as real processes, then runs every test in the workspace.
#
# MYCEL_REQUIRE_ALL=1 (set by CI) turns every skipped test into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The network-namespace suites (tests/tests/e2e/netns_*.rs) run real clients and
# servers inside pods: install them when we can (root with apt-get) and they
# are missing. Elsewhere those suites skip and say why.
# The bench's every-configuration run needs nginx and haproxy as well.
# The demo's stores (PostgreSQL, Redis, NATS) come from Debian's packages too.
netns_tools="iptables-save ip setpriv curl tcpdump redis-server redis-cli psql python3 nginx haproxy promtool prometheus chromium nats-server"
missing=""
for t in $netns_tools; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
if [ -z "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ]; then missing="$missing initdb"; fi
# The bench's L4 tunnel (nginx-l4) is nginx's stream module.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$missing libnginx-mod-stream"
# The gateway's client tests speak to it with Python httpx (HTTP/2) and grpcio,
# Debian's packages for Debian's python3.
if ! /usr/bin/python3 -c "import httpx, h2, grpc" >/dev/null 2>&1; then missing="$missing python3-httpx/h2/grpcio"; fi
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing packages for the netns and bench suites (missing:$missing)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      iptables iproute2 util-linux curl tcpdump redis-server redis-tools \
      postgresql postgresql-client python3 python3-httpx python3-h2 python3-grpcio \
      nginx libnginx-mod-stream haproxy prometheus chromium nats-server >/dev/null; }; then
    echo "warning: apt-get install failed; the netns suites will report what is missing" >&2
  fi
fi

# The Kubernetes tier runs a real etcd and kube-apiserver (built from Go
# modules) and helm/kubectl; built once and cached outside the repo, keyed by
# version (tests/k8s/build-binaries.sh). Without Go those tests skip.
if command -v go >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
  tests/k8s/build-binaries.sh || echo "warning: building the Kubernetes binaries failed; the k8s tests will say what is missing" >&2
fi

# The images suite (tests/tests/e2e/images.rs) builds and runs the container
# images: it needs a docker daemon, installed and started here when we can
# (root with apt-get). Elsewhere it skips and says why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  tests/docker/ensure-dockerd.sh || echo "warning: no docker daemon; the images tests will say why" >&2
elif ! docker info >/dev/null 2>&1; then
  echo "warning: no docker daemon and not root with apt-get to start one; the images tests will skip" >&2
fi
# The images are built here, alone, rather than by the test amid the timed
# suites: a cold build is minutes of both cores. The test runs the same
# script again, which then only checks that nothing changed.
if docker info >/dev/null 2>&1; then
  images/build.sh || echo "warning: images/build.sh failed; the images tests will fail and say why" >&2
fi

cargo build --workspace --bins
# Skipped tests report as `ok` in libtest; they are listed here at the end.
skipped=target/debug/mycel-skipped.txt
rm -f "$skipped"
# Each end-to-end test starts a dozen processes; two at a time keeps a
# two-core machine responsive enough for the timing the tests assert.
status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 || status=$?
# The kind tier (tests/kind/run.sh all): a real kind cluster, the chart,
# the demo shop and the end-to-end suite of tests/tests/kind/. It needs root
# and docker; the node image is built here with nothing pulled
# (tests/kind/node-image/build.sh, cached) unless MYCEL_KIND_NODE_IMAGE
# names one.
if [ "$(id -u)" = 0 ] && docker info >/dev/null 2>&1; then
  if [ -z "${MYCEL_KIND_NODE_IMAGE:-}" ]; then
    MYCEL_KIND_NODE_IMAGE=$(tests/kind/node-image/build.sh) || { echo "the kind node image failed to build" >&2; status=1; }
    export MYCEL_KIND_NODE_IMAGE
  fi
  if [ -n "${MYCEL_KIND_NODE_IMAGE:-}" ]; then
    tests/kind/run.sh all || status=$?
  fi
else
  reason="the kind tier needs root and a docker daemon"
  echo "SKIPPED kind tier: $reason" | tee -a "$skipped"
  if [ "${MYCEL_REQUIRE_ALL:-0}" = 1 ]; then
    echo "MYCEL_REQUIRE_ALL=1 but $reason" >&2
    status=1
  fi
fi

if [ -s "$skipped" ]; then
  echo
  echo "Skipped tests ($(wc -l <"$skipped")); they passed nothing:"
  sed 's/^/  /' "$skipped"
fi
exit "$status"
