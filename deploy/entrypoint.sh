#!/bin/sh
# The image's entrypoint (under tini): refuses to start a container that holds CAP_SYS_ADMIN
# in the host's user namespace, then runs the command.
#
# The sandbox jail needs CAP_SYS_ADMIN to build its namespaces and mounts. Held in a user
# namespace of the container's own (podman --userns=auto, Docker userns-remap, Kubernetes
# hostUsers: false), it reaches only what that namespace owns. Held in the host's user namespace,
# it reaches the host: deploy/privileges_probe.py shows such a container mounting a new cgroup v1
# hierarchy with a writable release_agent, a known escape to root on the host. A deployment that
# adds SYS_ADMIN but forgets the user namespace therefore fails here, loudly, instead of running.
#
# The service itself never needs this script: `deno task start` on a host is unaffected.
set -eu

cap_eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
uid_map=$(tr -s ' \t' ' ' </proc/self/uid_map | sed 's/^ //')
cap_sys_admin=21

if [ $(((0x$cap_eff >> cap_sys_admin) & 1)) -eq 1 ] && [ "$uid_map" = "0 0 4294967295" ]; then
  cat >&2 <<'EOF'
faas-sandbox: refusing to start: this container holds CAP_SYS_ADMIN in the host's user namespace,
where it could escape to the host. Run it in a user namespace of its own (podman: userns_mode
"auto", see deploy/compose.podman.yaml; Docker: "userns-remap" in daemon.json; Kubernetes:
hostUsers: false), or drop SYS_ADMIN (runs then lose their namespaces; /health says which).
See deploy/README.md#privileges.
EOF
  exit 1
fi

exec "$@"
