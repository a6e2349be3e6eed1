#!/usr/bin/env bash
# Builds a kind node image with nothing pulled from any image registry:
# everything comes from this machine's Debian package mirror (apt's own
# sources) and from Go modules, so it works in an air-gapped network that
# mirrors those two.
#
#   rootfs       debootstrap of Debian (systemd, containerd, runc, iptables,
#                CNI plugins), `docker import`ed as mycel-kind-base:<key>
#   kubernetes   kubelet, kubeadm, kubectl and the control-plane commands,
#                built from k8s.io/kubernetes (tests/k8s/build-binaries.sh)
#   images       the images kubeadm asks for (apiserver, controller-manager,
#                scheduler, proxy, etcd, coredns, pause), each FROM scratch
#                with a static binary; kube-proxy also gets iptables and its
#                libraries from the rootfs. Loaded into the node's containerd
#                at boot, before the kubelet starts.
#   node         FROM the rootfs with files/ (entrypoint, systemd units,
#                containerd and CNI configuration) and the above.
#
# Every piece is cached outside the repository ($MYCEL_KIND_CACHE, default
# ~/.cache/mycel/kind), keyed by version and by the content of this
# directory; a second run with nothing changed only prints the image name.
#
# Usage: tests/kind/node-image/build.sh [--print-image]
# Needs root, docker, debootstrap, Go 1.25+, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

K8S_VERSION=${MYCEL_K8S_VERSION:-1.35.4}
COREDNS_VERSION=${MYCEL_COREDNS_VERSION:-1.13.1}
DEBIAN_SUITE=${MYCEL_KIND_DEBIAN_SUITE:-bookworm}
POD_SUBNET=${MYCEL_KIND_POD_SUBNET:-198.18.0.0/16}
PACKAGES="systemd systemd-sysv dbus containerd runc iptables iproute2 \
containernetworking-plugins conntrack ethtool socat kmod procps mount util-linux \
ca-certificates"
# What kube-proxy runs besides itself: iptables (nf_tables and legacy) and
# the libraries these need.
PROXY_PACKAGES="iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0 \
libnetfilter-conntrack3 libnfnetlink0 libc6 libgcc-s1 netbase"

cache=${MYCEL_KIND_CACHE:-$HOME/.cache/mycel/kind}
log() { echo "node-image: $*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

key_of() { sha256sum | cut -c1-12; }
rootfs_key=$(echo "$DEBIAN_SUITE $PACKAGES $PROXY_PACKAGES" | key_of)
node_key=$( (
  echo "$K8S_VERSION $COREDNS_VERSION $POD_SUBNET $rootfs_key"
  cd "$here" && find . -type f -o -type l | LC_ALL=C sort | xargs sha256sum
) | key_of)
node_image="mycel-kind-node:v$K8S_VERSION-$node_key"
base_image="mycel-kind-base:$DEBIAN_SUITE-$rootfs_key"

if [ "${1:-}" = "--print-image" ]; then
  echo "$node_image"
  exit 0
fi

need docker "Debian: apt-get install docker.io (tests/docker/ensure-dockerd.sh starts a daemon)"
docker info >/dev/null 2>&1 || die "no docker daemon answers (tests/docker/ensure-dockerd.sh starts one)"
if docker image inspect "$node_image" >/dev/null 2>&1; then
  log "up to date: $node_image"
  echo "$node_image"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap and the rootfs need root"
need go "Go 1.25 or newer builds Kubernetes, CoreDNS and the pause program"
need python3 "tests/k8s/build-binaries.sh uses it"
start=$SECONDS

# --- Go programs -----------------------------------------------------------
bin=$(MYCEL_K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm" \
  "$repo/tests/k8s/build-binaries.sh" --print-dir)
MYCEL_K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm" \
  "$repo/tests/k8s/build-binaries.sh" >&2

gobin="$cache/go-bin"
mkdir -p "$gobin"
coredns="$gobin/coredns-v$COREDNS_VERSION"
if [ ! -x "$coredns" ]; then
  log "building CoreDNS v$COREDNS_VERSION (about 3 minutes cold)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
  mv "$tmp/coredns" "$coredns"
  rmdir "$tmp"
fi
pause="$gobin/pause-$(cat "$here/pause/main.go" "$here/pause/go.mod" | key_of)"
if [ ! -x "$pause" ]; then
  log "building the pause program"
  (cd "$here/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$pause" .)
fi

# --- Debian root filesystem ------------------------------------------------
debian_mirror() {
  # The mirror apt already uses: deb822 .sources first, then sources.list.
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list{,.d}; set MYCEL_KIND_DEBIAN_MIRROR"
  echo "$uri"
}
rootfs_dir="$cache/rootfs/$DEBIAN_SUITE-$rootfs_key"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  if [ ! -f "$rootfs_dir/rootfs.tar" ]; then
    if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      log "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } || true
    fi
    need debootstrap "apt-get install debootstrap"
    mirror=${MYCEL_KIND_DEBIAN_MIRROR:-$(debian_mirror)}
    root="$rootfs_dir/root"
    if [ ! -f "$rootfs_dir/debootstrap.done" ]; then
      log "debootstrap $DEBIAN_SUITE (about 2 minutes)"
      rm -rf "$rootfs_dir"
      mkdir -p "$rootfs_dir"
      # shellcheck disable=SC2086 # one word per package
      debootstrap --variant=minbase --include="$(echo $PACKAGES | tr ' ' ,)" \
        "$DEBIAN_SUITE" "$root" "$mirror" >"$rootfs_dir/debootstrap.log" 2>&1 ||
        { tail -20 "$rootfs_dir/debootstrap.log" >&2; die "debootstrap failed (log: $rootfs_dir/debootstrap.log)"; }
      touch "$rootfs_dir/debootstrap.done"
    fi
    # A container's systemd has no consoles, udev or time to keep.
    for unit in getty.target console-getty.service systemd-udevd.service \
      systemd-udev-trigger.service systemd-timesyncd.service systemd-networkd.service \
      systemd-resolved.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
      fstrim.timer dpkg-db-backup.timer; do
      ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
    # kube-proxy's files: what dpkg installed for its packages, with the
    # alternatives links that name the iptables backend.
    (
      cd "$root"
      for p in $PROXY_PACKAGES; do
        list=var/lib/dpkg/info/$p.list
        [ -f "$list" ] || list=var/lib/dpkg/info/$p:amd64.list
        [ -f "$list" ] || die "package $p is not in the rootfs"
        sed 's#^/##' "$list" | while read -r f; do
          if [ -f "$f" ] || [ -L "$f" ]; then echo "$f"; fi
        done
      done
      # The plain names are update-alternatives links, not in dpkg's lists.
      for t in iptables ip6tables; do
        for suffix in "" -save -restore; do
          echo "usr/sbin/$t$suffix"
          echo "etc/alternatives/$t$suffix"
        done
      done
    ) | grep -v '^usr/share/' >"$rootfs_dir/proxy-files.listed"
    # dpkg lists /lib/...; with Debian's merged /usr those live under
    # usr/lib, and /lib is a link. Archive the real paths and the links.
    python3 -c '
import os, sys
root = sys.argv[1]
out = {d for d in ("bin", "sbin", "lib", "lib64") if os.path.islink(os.path.join(root, d))}
for line in open(sys.argv[2]):
    rel = line.strip()
    parent = os.path.realpath(os.path.join(root, os.path.dirname(rel)))
    out.add(os.path.relpath(os.path.join(parent, os.path.basename(rel)), root))
print("\n".join(sorted(out)))
' "$root" "$rootfs_dir/proxy-files.listed" >"$rootfs_dir/proxy-files"
    tar -C "$root" -cf "$rootfs_dir/proxy-root.tar" --files-from "$rootfs_dir/proxy-files"
    tar -C "$root" -cf "$rootfs_dir/rootfs.tar.part" .
    mv "$rootfs_dir/rootfs.tar.part" "$rootfs_dir/rootfs.tar"
    rm -rf "$root"
  fi
  log "docker import $base_image"
  docker import "$rootfs_dir/rootfs.tar" "$base_image" >/dev/null
fi

# --- control-plane images ----------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/mycel-node-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/node/images"
# The exact names and tags kubeadm will ask the kubelet to run.
mapfile -t wanted < <("$bin/kubeadm" config images list --kubernetes-version "v$K8S_VERSION" 2>/dev/null)
[ "${#wanted[@]}" -ge 7 ] || die "kubeadm config images list gave: ${wanted[*]}"

docker_build() { # docker build ARGS..., quiet unless it fails
  local out
  out=$(docker build "$@" 2>&1) || { echo "$out" >&2; die "docker build $* failed"; }
}

# An image FROM scratch whose entrypoint is one static program at $dest;
# with a root tarball, that file system under it.
scratch_image() { # ref source dest [root.tar]
  local ref=$1 src=$2 dest=$3 root=${4:-} ctx="$work/img"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$src" "$ctx/program"
  [ -z "$root" ] || cp "$root" "$ctx/root.tar"
  {
    echo "FROM scratch"
    [ -z "$root" ] || echo "ADD root.tar /"
    echo "COPY program $dest"
    echo "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "ENTRYPOINT [\"$dest\"]"
  } >"$ctx/Dockerfile"
  docker_build --network none -t "$ref" "$ctx"
}

for ref in "${wanted[@]}"; do
  name=${ref##*/}
  name=${name%%:*}
  case $name in
    kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
      scratch_image "$ref" "$bin/$name" "/usr/local/bin/$name" ;;
    # kube-proxy programs iptables.
    kube-proxy) scratch_image "$ref" "$bin/kube-proxy" /usr/local/bin/kube-proxy "$rootfs_dir/proxy-root.tar" ;;
    # kubeadm's Deployment runs the image's entrypoint with -conf only.
    coredns) scratch_image "$ref" "$coredns" /coredns ;;
    pause) scratch_image "$ref" "$pause" /pause ;;
    *) die "kubeadm asks for $ref, which this script does not know how to build" ;;
  esac
  log "built $ref"
  docker save "$ref" -o "$work/node/images/$name.tar"
done
# The sandbox image in the containerd configuration is the one kubeadm names.
pause_ref=$(printf '%s\n' "${wanted[@]}" | grep '/pause:')

# --- node image --------------------------------------------------------------
ctx="$work/node"
cp -a "$here/files" "$ctx/files"
sed -i "s#@POD_SUBNET@#$POD_SUBNET#" "$ctx/files/etc/cni/net.d/10-mycel-bridge.conflist"
sed -i "s#^\([[:space:]]*sandbox_image = \).*#\1\"$pause_ref\"#" "$ctx/files/etc/containerd/config.toml"
echo "v$K8S_VERSION" >"$ctx/files/kind/version"
wants="$ctx/files/etc/systemd/system/multi-user.target.wants"
mkdir -p "$wants"
for unit in containerd.service mycel-load-images.service kubelet.service; do
  ln -s "../$unit" "$wants/$unit"
done
mkdir -p "$ctx/files/usr/bin"
for b in kubelet kubeadm kubectl; do cp "$bin/$b" "$ctx/files/usr/bin/"; done
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base_image
COPY files/ /
COPY images/ /kind/images/
ENV container=docker
# systemd's own signal to halt.
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint"]
DOCKERFILE
log "docker build $node_image"
docker_build --network none \
  --label "io.mycel.kubernetes-version=v$K8S_VERSION" --label "io.mycel.pod-subnet=$POD_SUBNET" \
  -t "$node_image" "$ctx"
log "built $node_image in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$node_image" | awk '{printf "%.0f", $1/1e6}') MB)"
echo "$node_image"
