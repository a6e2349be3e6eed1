#!/usr/bin/env bash
# Makes `docker info` work on this machine, or says why it cannot: installs
# docker.io when missing (root with apt-get), starts dockerd when no daemon
# answers, and waits for it. Does nothing when a daemon already answers, so
# it is safe to run before every test run (tests/run.sh does).
#
# A daemon started here keeps running after the script (tests and image
# builds use it); its log is $MYCEL_DOCKERD_LOG (default
# /var/log/mycel-dockerd.log).
#
# How it is started, and why:
#   --bridge=none          no default docker0 in 172.17.0.0/16: test traffic
#                          may only use loopback and 198.18.0.0/15 here;
#   --default-address-pool networks created without --subnet come from
#                          198.18.200.0/24, the range set aside for docker;
#   --iptables=false --ip-forward=false
#                          the host's firewall and forwarding, which other
#                          suites on this machine use, stay untouched (our
#                          containers use --network none, host, or a docker
#                          network reached directly from the host).
set -euo pipefail

log=${MYCEL_DOCKERD_LOG:-/var/log/mycel-dockerd.log}
wait_secs=${MYCEL_DOCKERD_WAIT:-60}

say() { echo "ensure-dockerd: $*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

is_root() { [ "$(id -u)" = 0 ]; }

if ! command -v dockerd >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing docker.io"
    # The package's service is not started here (no systemd in these
    # machines); dockerd is started below.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null ||
        { say "apt-get install docker.io failed"; exit 1; }
    fi
  else
    say "dockerd is not installed and cannot be installed here (needs root and apt-get: apt-get install docker.io)"
    exit 1
  fi
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  if ! is_root; then
    say "no docker daemon is running and only root can start one (run this script as root)"
    exit 1
  fi
  say "starting dockerd (log: $log)"
  mkdir -p "$(dirname "$log")"
  # setsid: the daemon outlives this script and the test run that called it,
  # and a Ctrl-C in the caller's terminal does not reach it.
  setsid nohup dockerd \
    --bridge=none \
    --default-address-pool base=198.18.200.0/24,size=24 \
    --iptables=false --ip-forward=false \
    >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 1 "$wait_secs"); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
say "the docker daemon did not answer within ${wait_secs}s; the end of $log:"
tail -20 "$log" >&2 || true
say "docker info says: $(docker info 2>&1 >/dev/null | grep -m1 -v '^$' || true)"
exit 1
