#!/bin/bash
# Imports the control-plane images built with this node image into
# containerd's k8s.io namespace, where the kubelet looks for them. Nothing
# can be pulled where this image is meant to run; kubeadm's static pods
# and the sandbox need these before the kubelet starts.
set -euo pipefail
shopt -s nullglob
for _ in $(seq 1 60); do
  ctr version >/dev/null 2>&1 && break
  sleep 0.5
done
for archive in /kind/images/*.tar; do
  ctr --namespace k8s.io images import "$archive" >/dev/null
  echo "mycel-node: loaded $(basename "$archive")"
done
