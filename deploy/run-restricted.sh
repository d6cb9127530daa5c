#!/usr/bin/env bash
# Runs a command with the privileges the container gets (deploy/compose.yaml, deploy/k8s/):
# root in a user namespace of its own, holding only the capabilities SETUID, SETGID, KILL,
# CHOWN, DAC_OVERRIDE, SYS_CHROOT and SYS_ADMIN (bounding, permitted and effective sets, all
# valid in that namespace only), no inheritable or ambient capabilities, and no_new_privs set.
#
#   deploy/run-restricted.sh deno task start
#   deploy/run-restricted.sh deno test --allow-all --no-prompt src/ tests/
#   deploy/run-restricted.sh --read-only deno task start
#
# The user namespace maps ids 0..FAAS_RESTRICTED_USERNS_SIZE-1 (default 2097152, the size
# deploy/compose.podman.yaml asks for) onto the same ids of this host, so the checkout stays
# readable as it is. What changes is the reach of the capabilities: a namespace, mount or
# cgroup that the user namespace does not own is out of it, as in the container.
#
# --read-only also gives the command the container's filesystem: the root filesystem read-only
# and a private, empty tmpfs on /tmp (noexec, nosuid, nodev), in a mount namespace of its own.
#
# FAAS_RESTRICTED_CAPS overrides the set, e.g. FAAS_RESTRICTED_CAPS=setuid,setgid,kill to see
# what fails without the others. Needs root and util-linux (setpriv, unshare, mount).
set -euo pipefail

caps="${FAAS_RESTRICTED_CAPS:-setuid,setgid,kill,chown,dac_override,sys_chroot,sys_admin}"
size="${FAAS_RESTRICTED_USERNS_SIZE:-2097152}"

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
for tool in setpriv unshare; do
  if ! command -v "$tool" >/dev/null; then
    echo "run-restricted.sh: $tool not found (Debian package util-linux)" >&2
    exit 2
  fi
done

bounding="-all"
IFS=',' read -ra wanted <<<"$caps"
for cap in "${wanted[@]}"; do
  bounding+=",+${cap,,}"
done
restrict=(setpriv --bounding-set="$bounding" --inh-caps=-all --ambient-caps=-all --no-new-privs --)

command=("${restrict[@]}" "$@")
if [ "$read_only" = true ]; then
  # The mounts happen before the capabilities are narrowed, then the command runs inside them.
  command=(unshare --mount --propagation private -- sh -c '
    mount -t tmpfs -o size=1g,mode=1777,noexec,nosuid,nodev tmpfs /tmp &&
    mount -o remount,bind,ro / &&
    exec "$@"' sh "${command[@]}")
fi

# The user namespace: this process enters it (keeping its pid, so that signals sent to it reach
# the command), and a helper outside writes its id maps; mapping uid 0 takes CAP_SETFCAP in the
# host's user namespace, which only a process outside has.
sync_dir=$(mktemp -d)
mkfifo "$sync_dir/entered" "$sync_dir/mapped"
self=$$
(
  read -r _ <"$sync_dir/entered"
  printf '0 0 %s\n' "$size" >"/proc/$self/uid_map"
  printf '0 0 %s\n' "$size" >"/proc/$self/gid_map"
  echo >"$sync_dir/mapped"
  rm -rf "$sync_dir"
) &
# shellcheck disable=SC2016 # $1, $2 and $@ are the inner shell's
exec unshare --user -- sh -c 'echo >"$1"; read -r _ <"$2"; shift 2; exec "$@"' \
  sh "$sync_dir/entered" "$sync_dir/mapped" "${command[@]}"
