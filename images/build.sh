#!/usr/bin/env bash
# Builds Mycel's container images from this checkout, pulling nothing:
#   mycel-controller:<tag>  mycel-proxy:<tag>  mycel-demo:<tag>
#   mycel-demo-stores:<tag> (the demo's PostgreSQL, Redis and NATS servers)
#
# Usage: images/build.sh [TAG]
#   TAG defaults to the workspace version in Cargo.toml, which is the chart's
#   appVersion (helm/mycel/Chart.yaml), the tag the chart deploys by default.
#
# Steps: static binaries (glibc, +crt-static: the musl target cannot be had
# here) built with the `image` profile into target/x86_64-unknown-linux-gnu/,
# apart from the debug build; the proxy's iptables root filesystem unpacked
# from Debian packages (apt-get download + dpkg-deb -x, see
# docs/architecture.md "Images" for why iptables at all); then one
# `docker build` per image, each FROM scratch.
#
# Needs: cargo, docker with a running daemon (tests/docker/ensure-dockerd.sh
# starts one), apt-get and dpkg-deb (a Debian or Ubuntu machine).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "images/build.sh: error: $*" >&2
  exit 1
}

workspace_version() {
  sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml
}

version=$(workspace_version)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
tag=${1:-$version}
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' helm/mycel/Chart.yaml)
if [ "$app_version" != "$version" ]; then
  # The chart deploys appVersion by default; a mismatch means it would ask
  # for a tag this script does not build.
  echo "images/build.sh: warning: helm/mycel/Chart.yaml appVersion ($app_version) differs from the workspace version ($version)" >&2
fi

# Fail early and say what to do, before minutes of compiling.
command -v docker >/dev/null 2>&1 ||
  die "docker is not installed (Debian: apt-get install docker.io; tests/docker/ensure-dockerd.sh installs and starts it)"
if ! info_err=$(docker info 2>&1 >/dev/null); then
  die "the docker daemon is not reachable: $(echo "$info_err" | grep -m1 -v '^$')
  start it with tests/docker/ensure-dockerd.sh (as root), or check DOCKER_HOST and the permissions of /var/run/docker.sock"
fi
for tool in apt-get dpkg-deb cargo readelf python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (the proxy's iptables root filesystem is made from Debian packages; binaries with cargo)"
done

# Run from inside cargo (the images test does), the caller's CARGO_PKG_*,
# CARGO_MANIFEST_DIR and the like would reach the build scripts that watch
# them (ring's does) and rebuild half the graph each time the caller
# changes; the user's own cargo settings (CARGO_HOME,
# CARGO_PROFILE_*, ...) stay.
while read -r var; do
  case $var in
    CARGO | CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_* | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | \
      CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR | CARGO_CFG_* | CARGO_ENCODED_RUSTFLAGS | OUT_DIR)
      unset "$var" ;;
  esac
done < <(compgen -e)

target=x86_64-unknown-linux-gnu
profile=image
# Not target/image: cargo keeps the profile's build scripts there.
work=target/images
# The static release build goes to a target dir outside the checkout, one
# per toolchain (MYCEL_IMAGE_TARGET_DIR overrides): its ~270 dependencies
# at opt-level 3 take 25+ minutes cold on 2 cores, and kept here a fresh
# clone (CI) recompiles only Mycel's own crates.
if [ -z "${MYCEL_IMAGE_TARGET_DIR:-}" ]; then
  toolchain=$(rustc -V | cut -d' ' -f2)
  MYCEL_IMAGE_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/mycel/image-target/rust-$toolchain"
fi
export CARGO_TARGET_DIR="$MYCEL_IMAGE_TARGET_DIR"
bins="$CARGO_TARGET_DIR/$target/$profile"

# Cargo judges Mycel's own crates fresh by file times: in a target dir
# shared by several checkouts, another checkout's newer build would pass for
# this one's sources. So their artefacts are dropped whenever the checkout
# differs from the one that built last (dependencies stay).
checkout=$(pwd -P)
stamp="$CARGO_TARGET_DIR/mycel-image-checkout"
if [ "$(cat "$stamp" 2>/dev/null)" != "$checkout" ] && [ -d "$CARGO_TARGET_DIR/$target/$profile" ]; then
  members=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(" ".join("-p " + p["name"] for p in json.load(sys.stdin)["packages"]))')
  # shellcheck disable=SC2086 # one word per flag
  cargo clean -q --profile "$profile" --target "$target" $members
fi

# 1. Static binaries. RUSTFLAGS with --target reaches only the target's
# crates, not build scripts or proc macros, which stay dynamic host programs.
echo "==> cargo build --profile $profile --target $target (static)"
started=$(date +%s)
RUSTFLAGS="-C target-feature=+crt-static" nice cargo build --profile "$profile" --target "$target" \
  -p mycel-control-plane --bin mycel-controller \
  -p mycel-sidecar --bin mycel-proxy \
  -p mycel-demo --bin mycel-demo
echo "    binaries built in $(($(date +%s) - started)) s"
echo "$checkout" >"$stamp"
for b in mycel-controller mycel-proxy mycel-demo; do
  # A FROM scratch image has no dynamic loader: refuse a dynamic binary here
  # rather than ship one that fails with a bare "no such file or directory".
  if readelf -l "$bins/$b" | grep -q 'program interpreter'; then
    die "$bins/$b is dynamically linked; it cannot run in a scratch image"
  fi
done

# 2. The proxy's root filesystem: iptables (nf_tables backend) with its
# libraries, from the packages of this machine's apt sources.
# The closure of `iptables` Depends, checked by hand (apt-cache depends):
# libc6 needs libgcc-s1; netbase gives /etc/protocols for `-p tcp` lookups.
packages="iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0
  libnetfilter-conntrack3 libnfnetlink0 libc6 libgcc-s1 netbase"
debs="$work/debs"
mkdir -p "$debs"
echo "==> apt-get download iptables and its libraries"
fresh=$(mktemp -d "$work/debs.XXXXXX")
# shellcheck disable=SC2086 # a word per package
if (cd "$fresh" && apt-get download -q $packages >download.log 2>&1); then
  rm -f "$debs"/*.deb
  mv "$fresh"/*.deb "$debs"/
elif ls "$debs"/*.deb >/dev/null 2>&1; then
  echo "images/build.sh: warning: apt-get download failed; using the packages downloaded before (in $debs):" >&2
  tail -3 "$fresh/download.log" >&2
else
  cat "$fresh/download.log" >&2
  rm -rf "$fresh"
  die "apt-get download failed and no packages were downloaded before (apt-get update may help)"
fi
rm -rf "$fresh"

context="$work/context"
rm -rf "$context"
mkdir -p "$context/controller" "$context/proxy" "$context/demo"
root="$context/proxy/root"
mkdir -p "$root/var/lib/dpkg/status.d"
for deb in "$debs"/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package)
  dpkg-deb -x "$deb" "$root"
  # What scanners read in distroless-style images (no dpkg in the image):
  # one control file per package, so the iptables and glibc versions shipped
  # are visible to CVE scanners.
  dpkg-deb -f "$deb" >"$root/var/lib/dpkg/status.d/$pkg"
  printf '    %s %s\n' $(dpkg-deb --show "$deb")
done
# Not needed to run iptables: documentation, glibc's charset converters, and
# iptables-apply, a bash script (there is no shell in the image).
rm -rf "$root/usr/share" "$root/usr/lib/x86_64-linux-gnu/gconv" \
  "$root"/usr/sbin/*-apply "$root/etc/ld.so.conf.d"
# The plain names are update-alternatives links, made by a maintainer
# script that dpkg-deb -x does not run: point them at the nf_tables backend.
for t in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -sf xtables-nft-multi "$root/usr/sbin/$t$suffix"
  done
done
# iptables-legacy takes its lock under /run; scratch has no directories.
mkdir -p "$root/run" "$root/tmp"
chmod 1777 "$root/tmp"
if scripts=$(grep -rlI '^#!' "$root" 2>/dev/null) && [ -n "$scripts" ]; then
  die "scripts left in the proxy's root filesystem (no shell there to run them): $scripts"
fi

# 3. The demo stores' root filesystem: the PostgreSQL, Redis and NATS
# servers as this machine's Debian packages installed them (postgresql,
# redis-server, nats-server; installed here when missing and we may), the
# libraries they load (ldd), PostgreSQL's lib and share trees, time zones,
# and a passwd naming the user they run as (initdb looks itself up).
stores_root="$context/stores/root"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if { [ -z "$pg_bin" ] || ! command -v redis-server >/dev/null 2>&1 || ! command -v nats-server >/dev/null 2>&1; } &&
  [ "$(id -u)" = 0 ]; then
  echo "==> apt-get install postgresql redis-server nats-server (the stores image's servers)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server nats-server >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server nats-server >/dev/null; } ||
    die "apt-get install postgresql redis-server nats-server failed"
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[ -n "$pg_bin" ] || die "no PostgreSQL server under /usr/lib/postgresql (Debian: apt-get install postgresql)"
redis_bin=$(command -v redis-server) || die "redis-server is missing (Debian: apt-get install redis-server)"
nats_bin=$(command -v nats-server) || die "nats-server is missing (Debian: apt-get install nats-server)"
pg_version=$(basename "$(dirname "$pg_bin")")
pg_lib=/usr/lib/postgresql/$pg_version/lib
pg_share=/usr/share/postgresql/$pg_version
echo "==> the stores' root filesystem (PostgreSQL $pg_version, $("$redis_bin" --version | cut -d' ' -f3), nats-server $("$nats_bin" --version | cut -d' ' -f2))"
mkdir -p "$stores_root"
# PostgreSQL's loadable modules, but not the JIT: llvmjit pulls in LLVM
# (~100 MB) and PostgreSQL runs without it.
pg_modules=$(find "$pg_lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*')
copy_with_libs() {
  local file lib
  for file in "$@"; do
    cp --parents -L "$file" "$stores_root/"
    # `ldd` names each library by the path it resolved, and the loader.
    for lib in $(ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
      [ -e "$stores_root$lib" ] || cp --parents -L "$lib" "$stores_root/"
    done
  done
}
# shellcheck disable=SC2086 # one word per module
copy_with_libs "$pg_bin/postgres" "$pg_bin/initdb" "$redis_bin" "$nats_bin" $pg_modules
# initdb runs the server through popen(3), which needs /bin/sh: the one
# shell of the image (dash), for initdb alone.
copy_with_libs /bin/dash
ln -sf dash "$stores_root/bin/sh"
# (Not `cp -a --parents`: coreutils 9.1 fails it on the parents' attributes.)
for tree in "$pg_share" /usr/share/zoneinfo; do
  mkdir -p "$stores_root$(dirname "$tree")"
  cp -a "$tree" "$stores_root$(dirname "$tree")/"
done
mkdir -p "$stores_root/etc" "$stores_root/tmp" "$stores_root/data"
chmod 1777 "$stores_root/tmp" "$stores_root/data"
printf 'root:x:0:0:root:/:/sbin/nologin\nstores:x:999:999:demo stores:/data:/sbin/nologin\n' >"$stores_root/etc/passwd"
printf 'root:x:0:\nstores:x:999:\n' >"$stores_root/etc/group"
if scripts=$(grep -rlI '^#!' "$stores_root" 2>/dev/null) && [ -n "$scripts" ]; then
  die "scripts left in the stores' root filesystem (no shell there to run them): $scripts"
fi
mkdir -p "$context/stores"
cp "$bins/mycel-demo" "$context/stores/"

cp "$bins/mycel-controller" "$context/controller/"
cp "$bins/mycel-proxy" "$context/proxy/"
cp "$bins/mycel-demo" "$context/demo/"

# 4. The images.
for image in controller proxy demo demo-stores; do
  name="mycel-$image:$tag"
  echo "==> docker build $name"
  if ! out=$(docker build --label "org.opencontainers.image.version=$tag" \
      -f "images/$image.Dockerfile" -t "$name" "$context/${image#demo-}" 2>&1); then
    echo "$out" >&2
    die "docker build of $name failed"
  fi
done

echo "==> images"
for image in controller proxy demo demo-stores; do
  bytes=$(docker image inspect -f '{{.Size}}' "mycel-$image:$tag")
  printf '    %-24s %6s MB\n' "mycel-$image:$tag" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1000000 }')"
done
