#!/usr/bin/env bash
# Makes tests/kind/runtime/mycel-runc docker's default runtime (see that
# file for why), keeping every other setting of /etc/docker/daemon.json,
# and has the running daemon reload its configuration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "runtime/install.sh: needs root" >&2; exit 1; }
install -D -m 0755 "$here/mycel-runc" /usr/local/libexec/mycel/mycel-runc
mkdir -p /etc/docker
python3 - /etc/docker/daemon.json <<'PY'
import json, os, sys
path = sys.argv[1]
conf = {}
if os.path.exists(path):
    with open(path) as f:
        conf = json.load(f)
conf.setdefault("runtimes", {})["mycel-runc"] = {"path": "/usr/local/libexec/mycel/mycel-runc"}
conf["default-runtime"] = "mycel-runc"
with open(path + ".tmp", "w") as f:
    json.dump(conf, f, indent=2)
os.replace(path + ".tmp", path)
PY
# runtimes and default-runtime are reloaded on SIGHUP.
pkill -HUP -x dockerd
for _ in $(seq 1 20); do
  docker info 2>/dev/null | grep -q 'Default Runtime: mycel-runc' && exit 0
  sleep 0.5
done
echo "runtime/install.sh: dockerd did not take mycel-runc as its default runtime" >&2
exit 1
