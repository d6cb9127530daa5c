#!/usr/bin/env bash
# Runs a command with the privileges the container gets: root, but only the capabilities
# SETUID, SETGID and KILL (bounding, permitted and effective sets), no inheritable or ambient
# capabilities, and no_new_privs set, as `--cap-drop ALL --cap-add SETUID --cap-add SETGID
# --cap-add KILL --security-opt no-new-privileges` (compose) or the pod securityContext do.
#
#   deploy/run-restricted.sh deno task start
#   deploy/run-restricted.sh deno test --allow-all --no-prompt tests/
#
# FAAS_RESTRICTED_CAPS overrides the set, e.g. FAAS_RESTRICTED_CAPS=setuid,setgid,kill,sys_admin
# to try the network-namespace layer. Needs root and util-linux's setpriv.
set -euo pipefail

caps="${FAAS_RESTRICTED_CAPS:-setuid,setgid,kill}"
if [ "$(id -u)" != 0 ]; then
  echo "run-restricted.sh: expected to run as root (the container's user), got uid $(id -u)" >&2
  exit 2
fi
if ! command -v setpriv >/dev/null; then
  echo "run-restricted.sh: setpriv not found (Debian package util-linux)" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "usage: run-restricted.sh COMMAND [ARG...]" >&2
  exit 2
fi

bounding="-all"
IFS=',' read -ra wanted <<<"$caps"
for cap in "${wanted[@]}"; do
  bounding+=",+${cap,,}"
done

exec setpriv --bounding-set="$bounding" --inh-caps=-all --ambient-caps=-all --no-new-privs -- "$@"
