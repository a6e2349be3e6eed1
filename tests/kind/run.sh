#!/usr/bin/env bash
# Mycel in a kind cluster, one verb at a time or all of them:
#
#   up       create the cluster (kind v0.33.0, tests/kind/cluster.yaml)
#   load     build Mycel's images (images/build.sh) and load them into it
#   install  helm install the chart into mycel-system and wait for it
#   demo     deploy the demo shop (demo-services/k8s/) and its ingress
#            gateway, reachable on http://127.0.0.1:30080
#   test     run the end-to-end suite (tests/tests/kind/) against the cluster
#   mem      print the node's and Mycel's memory in the cluster
#   down     delete the cluster and its docker network; nothing is left
#   all      down (a cluster left from before), up load install demo test
#            mem, then down (MYCEL_KIND_KEEP=1 keeps the cluster)
#
# Usage: tests/kind/run.sh VERB [VERB...]
#
# The node image is kind's published one for Kubernetes 1.35 unless
# MYCEL_KIND_NODE_IMAGE names another, such as the one
# tests/kind/node-image/build.sh builds with nothing pulled (what CI uses).
# The kubeconfig is written where kind writes it (KUBECONFIG or
# ~/.kube/config, context kind-mycel) and to $state/kubeconfig.
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND_VERSION=v0.33.0
# kind's own node image for the Kubernetes 1.35 line (published with kind
# v0.31.0; kind supports node images of other releases on a best-effort
# basis).
KIND_NODE_IMAGE=kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f
CLUSTER=${MYCEL_KIND_CLUSTER:-mycel}
NETWORK=${MYCEL_KIND_NETWORK:-mycel-kind}
NETWORK_SUBNET=${MYCEL_KIND_NETWORK_SUBNET:-198.18.200.0/24}
GATEWAY_URL=http://127.0.0.1:30080
cache=${MYCEL_KIND_CACHE:-$HOME/.cache/mycel/kind}
state=$cache/state/$CLUSTER

say() { echo "kind/run.sh: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

workspace_version() {
  sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml
}

# kubectl and helm: the user's, or the ones tests/k8s/build-binaries.sh
# caches (static binaries; CI builds them).
k8s_bin=$(tests/k8s/build-binaries.sh --print-dir)
[ -d "$k8s_bin" ] && PATH="$PATH:$k8s_bin"

kind_bin() {
  local cached="$cache/go-bin/kind-$KIND_VERSION"
  if [ -x "$cached" ]; then
    echo "$cached"
  elif command -v kind >/dev/null 2>&1 && kind version 2>/dev/null | grep -q "^kind $KIND_VERSION "; then
    command -v kind
  else
    command -v go >/dev/null 2>&1 || die "kind $KIND_VERSION is needed: install it, or Go to build it (go install sigs.k8s.io/kind@$KIND_VERSION)"
    say "building kind $KIND_VERSION (go install; under a minute)"
    mkdir -p "$cache/go-bin"
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
    mv "$tmp/kind" "$cached"
    rmdir "$tmp"
    echo "$cached"
  fi
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"; }

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

use_kubeconfig() {
  mkdir -p "$state"
  "$KIND" get kubeconfig --name "$CLUSTER" >"$state/kubeconfig" 2>/dev/null ||
    die "no kind cluster named $CLUSTER (tests/kind/run.sh up)"
  export KUBECONFIG="$state/kubeconfig"
}

# Some VMs keep capabilities out of every process, even privileged
# containers (this project's CI machine lacks CAP_SYS_RESOURCE): runc then
# refuses `docker run --privileged` with "unable to apply caps". kind nodes
# are privileged, so docker's default runtime becomes a wrapper that drops
# from each container's configuration the capabilities the machine lacks.
ensure_privileged_works() {
  local image=$1 out
  if out=$(docker run --rm --privileged --network none --entrypoint /bin/true "$image" 2>&1); then
    return 0
  fi
  case $out in
    *"apply caps"* | *"operation not permitted"*) ;;
    *) die "docker run --privileged $image failed: $out" ;;
  esac
  [ "$(id -u)" = 0 ] || die "privileged containers fail here ($out); as root this script installs a runtime wrapper for docker"
  say "privileged containers fail here ($(echo "$out" | grep -m1 -o 'unable to apply caps[^:]*: [^:]*' || echo "$out" | head -1)); installing docker runtime mycel-runc, which drops the capabilities this machine lacks"
  tests/kind/runtime/install.sh
  docker run --rm --privileged --network none --entrypoint /bin/true "$image" >/dev/null 2>&1 ||
    die "privileged containers still fail with the runtime wrapper installed"
}

# On a machine whose docker daemon was started without NAT
# (tests/docker/ensure-dockerd.sh: --iptables=false), the cluster is meant
# to reach nothing outside it: should anything turn on forwarding on the
# host, packets from the kind network still go nowhere but that network.
network_bridge() {
  echo "br-$(docker network inspect -f '{{.Id}}' "$NETWORK" | cut -c1-12)"
}
isolate_network() {
  pgrep -a dockerd 2>/dev/null | grep -q -- '--iptables=false' || return 0
  command -v iptables >/dev/null 2>&1 || return 0
  local br
  br=$(network_bridge)
  iptables -C FORWARD -i "$br" ! -o "$br" -j DROP 2>/dev/null ||
    iptables -I FORWARD -i "$br" ! -o "$br" -j DROP
}
unisolate_network() {
  command -v iptables >/dev/null 2>&1 || return 0
  local br
  br=$(network_bridge)
  while iptables -D FORWARD -i "$br" ! -o "$br" -j DROP 2>/dev/null; do :; done
}

up() {
  need docker "install docker (Debian: apt-get install docker.io)"
  docker info >/dev/null 2>&1 || die "no docker daemon answers (as root, tests/docker/ensure-dockerd.sh starts one)"
  if cluster_exists; then
    say "cluster $CLUSTER exists; using it"
    use_kubeconfig
    return 0
  fi
  local image=${MYCEL_KIND_NODE_IMAGE:-$KIND_NODE_IMAGE}
  if ! docker image inspect "$image" >/dev/null 2>&1 && ! docker pull "$image" >/dev/null 2>&1; then
    die "node image $image is not here and cannot be pulled; build one offline with
  MYCEL_KIND_NODE_IMAGE=\$(tests/kind/node-image/build.sh) tests/kind/run.sh up"
  fi
  ensure_privileged_works "$image"
  if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
    docker network create --driver bridge --subnet "$NETWORK_SUBNET" "$NETWORK" >/dev/null
  fi
  isolate_network
  mkdir -p "$state"
  cp tests/kind/cluster.yaml "$state/cluster.yaml"
  sed -i "s/^name: .*/name: $CLUSTER/" "$state/cluster.yaml"
  if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
    # Kubernetes 1.35's kubelet refuses cgroup v1 unless told otherwise.
    say "cgroup v1 host: the kubelet gets failCgroupV1: false"
    cat >>"$state/cluster.yaml" <<'EOF'
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
EOF
  fi
  local started=$SECONDS
  KIND_EXPERIMENTAL_DOCKER_NETWORK=$NETWORK "$KIND" create cluster --name "$CLUSTER" \
    --config "$state/cluster.yaml" --image "$image" --wait 180s
  say "cluster $CLUSTER up in $((SECONDS - started)) s"
  use_kubeconfig
}

load() {
  use_kubeconfig
  local tag
  tag=$(workspace_version)
  images/build.sh "$tag"
  local started=$SECONDS
  "$KIND" load docker-image --name "$CLUSTER" "mycel-controller:$tag" "mycel-proxy:$tag" "mycel-demo:$tag" \
    "mycel-demo-stores:$tag"
  say "images loaded in $((SECONDS - started)) s"
}

install() {
  use_kubeconfig
  need helm "install helm 3.8+ (CI uses the one tests/k8s/build-binaries.sh caches)"
  helm upgrade --install mycel helm/mycel -n mycel-system --create-namespace --wait --timeout 5m
}

demo() {
  use_kubeconfig
  need kubectl "install kubectl"
  kubectl apply -f demo-services/k8s/
  kubectl -n shop rollout status deployment --timeout 300s
  kubectl -n shop rollout status statefulset --timeout 300s
  # The gateway answers once its routes' services have endpoints.
  local i
  for i in $(seq 1 60); do
    if curl -fsS -o /dev/null --max-time 2 "$GATEWAY_URL/"; then
      say "the shop answers on $GATEWAY_URL/"
      return 0
    fi
    sleep 1
  done
  die "the shop did not answer on $GATEWAY_URL/ within 60 s"
}

# What the suite runs on the host: tcpdump and nsenter (the packet capture
# on a pod's interface) and headless Chromium (the page's screenshot).
# Installed here where this script may (root with apt-get); elsewhere the
# tests that need them skip and say why.
install_test_tools() {
  local missing=""
  command -v tcpdump >/dev/null 2>&1 || missing="$missing tcpdump"
  command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing$missing"
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } ||
      say "warning: apt-get install$missing failed; the tests that need them will say so"
  fi
}

run_tests() {
  use_kubeconfig
  install_test_tools
  mkdir -p target/kind-artifacts
  # --workspace, as tests/run.sh builds: a single package's build resolves
  # features differently and would rebuild a hundred crates (95 s here).
  cargo build --workspace --bins
  export MYCEL_KIND_CLUSTER=$CLUSTER MYCEL_KIND_GATEWAY=$GATEWAY_URL
  export MYCEL_KIND_ARTIFACTS="$(pwd)/target/kind-artifacts"
  local status=0
  # The suite is #[ignore]d in a plain `cargo test`: it needs this cluster.
  # lifecycle uninstalls and reinstalls the chart: it runs alone, last.
  cargo test --workspace --test kind -- --ignored --test-threads=1 --skip lifecycle:: || status=$?
  cargo test --workspace --test kind -- --ignored --test-threads=1 lifecycle:: || status=$?
  say "artifacts (screenshot, certificate reports): target/kind-artifacts/"
  return "$status"
}

mem() {
  use_kubeconfig
  local node="$CLUSTER-control-plane"
  docker stats --no-stream --format 'node container {{.Name}}: {{.MemUsage}}' "$node"
  kubectl get --raw "/api/v1/nodes/$node/proxy/stats/summary" | python3 -c '
import json, sys
summary = json.load(sys.stdin)
mib = lambda b: b / 1048576
mycel = proxies = 0
rows = []
for pod in summary["pods"]:
    ref = pod["podRef"]
    for c in pod.get("containers", []):
        ws = c.get("memory", {}).get("workingSetBytes", 0)
        if ref["namespace"] == "mycel-system" or c["name"] == "mycel-proxy":
            rows.append((ref["namespace"] + "/" + ref["name"], c["name"], ws))
            if c["name"] == "mycel-proxy":
                proxies += 1
            mycel += ws
for pod, container, ws in sorted(rows):
    print(f"  {pod:50} {container:18} {mib(ws):7.1f} MiB")
print(f"Mycel working set (kubelet): {mib(mycel):.1f} MiB ({proxies} sidecars and the controllers)")
node = summary["node"]["memory"]["workingSetBytes"]
print(f"node working set: {mib(node):.1f} MiB")
'
  # The kubelet's working set leaves out file pages, such as a static
  # binary's own text; resident set sizes, seen from inside the node:
  docker exec "$node" ps -o rss=,args= -C mycel-proxy,mycel-controller | awk '
    { kib[$2] += $1; n[$2]++ }
    END { for (p in kib) printf "  %-32s %2d processes, %6.1f MiB resident (%.1f each)\n", p, n[p], kib[p] / 1024, kib[p] / 1024 / n[p] }'
}

down() {
  if cluster_exists; then
    "$KIND" delete cluster --name "$CLUSTER"
  fi
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    unisolate_network
    docker network rm "$NETWORK" >/dev/null || say "warning: docker network $NETWORK is still in use"
  fi
  rm -rf "$state"
  local left
  left=$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=$CLUSTER")
  [ -z "$left" ] || die "containers of cluster $CLUSTER are left: $left"
}

all() {
  local started=$SECONDS
  if [ "${MYCEL_KIND_KEEP:-0}" != 1 ]; then
    trap 'down || true' EXIT
  fi
  local verb t
  # A fresh cluster: what a leftover one holds would make the run a
  # different test.
  down
  for verb in up load install demo run_tests mem; do
    t=$SECONDS
    "$verb"
    say "$verb: $((SECONDS - t)) s"
  done
  say "all: $((SECONDS - started)) s"
}

[ $# -gt 0 ] || die "usage: tests/kind/run.sh up|load|install|demo|test|mem|down|all ..."
KIND=$(kind_bin)
for verb in "$@"; do
  case $verb in
    up | load | install | demo | mem | down | all) "$verb" ;;
    test) run_tests ;;
    *) die "unknown verb $verb (up, load, install, demo, test, mem, down, all)" ;;
  esac
done
