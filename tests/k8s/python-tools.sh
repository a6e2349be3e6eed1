#!/usr/bin/env bash
# Installs the Python tools the helm chart's tests run over `helm template`
# output, in a virtualenv cached outside the repository and keyed by their
# versions:
#
#   $MYCEL_PY_TOOLS_CACHE/kv<kubernetes-validate>-checkov<checkov>/bin/{kubernetes-validate,checkov}
#
# MYCEL_PY_TOOLS_CACHE defaults to ~/.cache/mycel/python-tools. A second run
# with the same versions does nothing. Needs python3 with venv and pip.
#
# Usage: tests/k8s/python-tools.sh [--print-dir]
set -euo pipefail

# kubernetes-validate's version follows the Kubernetes minor it knows the
# schemas of; checkov is pinned so a new rule cannot fail the tests unasked.
KUBERNETES_VALIDATE_VERSION=1.35.0
CHECKOV_VERSION=3.3.30

cache=${MYCEL_PY_TOOLS_CACHE:-$HOME/.cache/mycel/python-tools}
venv="$cache/kv$KUBERNETES_VALIDATE_VERSION-checkov$CHECKOV_VERSION"
if [ "${1:-}" = "--print-dir" ]; then
  echo "$venv/bin"
  exit 0
fi

log() { echo "python-tools: $*" >&2; }
mkdir -p "$cache"
# Tests running at once wait for one install instead of racing it.
exec 9>"$cache/.lock"
flock 9
if [ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/checkov" ] && [ -e "$venv/.complete" ]; then
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { log "python3 is required"; exit 1; }

log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and checkov $CHECKOV_VERSION into $venv"
start=$SECONDS
# A venv's scripts name their interpreter by absolute path, so it is built
# in its final place; `.complete` marks a finished install, and anything
# without it (an interrupted run) is thrown away first.
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION"
"$venv/bin/kubernetes-validate" --version >/dev/null
"$venv/bin/checkov" --version >/dev/null
touch "$venv/.complete"
log "ready in $((SECONDS - start)) s: $venv/bin"
