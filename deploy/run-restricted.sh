#!/usr/bin/env bash
# Runs a command with the privileges the container gets: root, but only the capabilities
# SETUID, SETGID, KILL, CHOWN and DAC_OVERRIDE (bounding, permitted and effective sets), no
# inheritable or ambient capabilities, and no_new_privs set, as compose (`cap_drop: [ALL]`,
# `cap_add`, `no-new-privileges`) and the pod securityContext do.
#
#   deploy/run-restricted.sh deno task start
#   deploy/run-restricted.sh deno test --allow-all --no-prompt tests/
#   deploy/run-restricted.sh --read-only deno task start
#
# --read-only also gives the command the container's filesystem: the root filesystem read-only
# and a private, empty tmpfs on /tmp (noexec, nosuid, nodev), in a mount namespace of its own.
#
# FAAS_RESTRICTED_CAPS overrides the set, e.g. FAAS_RESTRICTED_CAPS=setuid,setgid,kill to see
# what fails without the others, or add sys_admin to try the network-namespace layer.
# Needs root and util-linux (setpriv, unshare, mount).
set -euo pipefail

caps="${FAAS_RESTRICTED_CAPS:-setuid,setgid,kill,chown,dac_override}"

read_only=false
if [ "${1:-}" = "--read-only" ]; then
  read_only=true
  shift
fi
if [ $# -eq 0 ]; then
  echo "usage: run-restricted.sh [--read-only] COMMAND [ARG...]" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "run-restricted.sh: expected to run as root (the container's user), got uid $(id -u)" >&2
  exit 2
fi
if ! command -v setpriv >/dev/null; then
  echo "run-restricted.sh: setpriv not found (Debian package util-linux)" >&2
  exit 2
fi

bounding="-all"
IFS=',' read -ra wanted <<<"$caps"
for cap in "${wanted[@]}"; do
  bounding+=",+${cap,,}"
done
restrict=(setpriv --bounding-set="$bounding" --inh-caps=-all --ambient-caps=-all --no-new-privs --)

if [ "$read_only" = true ]; then
  # The mounts happen with full privileges, then the command runs restricted inside them.
  exec unshare --mount --propagation private -- sh -c '
    mount -t tmpfs -o size=1g,mode=1777,noexec,nosuid,nodev tmpfs /tmp &&
    mount -o remount,bind,ro / &&
    exec "$@"' sh "${restrict[@]}" "$@"
fi
exec "${restrict[@]}" "$@"
