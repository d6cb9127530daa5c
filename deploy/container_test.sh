#!/usr/bin/env bash
# The image, built and attacked: builds it with podman, runs it with exactly the privileges
# deploy/compose.yaml grants (the podman flags are generated from that file), and tests it
# from outside, over HTTP:
#
#   1. a Debian bookworm base made with debootstrap (no image registry needed), imported under
#      the name the Dockerfile's DEBIAN_IMAGE gives, unless an image of that name exists;
#   2. `podman build` with the build secret extra_ca, then proof that no layer and no history
#      entry of the image holds any certificate of that secret;
#   3. deploy/privileges_probe.py inside the container: which jail operations the privileges
#      allow;
#   4. the wire-contract suite, then the JavaScript and Python attack suites, each against a
#      container started with that suite's settings (FAAS_TEST_URL, FAAS_TEST_ENV);
#   5. tests/container_test.ts: the container's isolation layers next to those of the service
#      run directly on this machine, every missing layer named with its reason, then a SIGTERM
#      with runs in flight (every accepted run answered, exit code 0).
#
#   deploy/container_test.sh          # as root, from the repository (any clean clone)
#   deploy/container_test.sh --cold   # first drop the cached base and the build cache
#
# Environment:
#   FAAS_CI_CACHE   where the debootstrapped base is kept between runs
#                   (default /var/cache/faas-sandbox-ci)
#   FAAS_EXTRA_CA   PEM bundle given to the build as the secret extra_ca
#                   (default /etc/ssl/certs/ca-certificates.crt, the host's trust store)
#   DEBIAN_MIRROR   mirror for debootstrap (default http://deb.debian.org/debian)
#   FAAS_KEEP=1     leave the test containers and the image in place
#
# Needs root, podman, debootstrap (only while the base is not cached), deno, openssl, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

CACHE=${FAAS_CI_CACHE:-/var/cache/faas-sandbox-ci}
EXTRA_CA=${FAAS_EXTRA_CA:-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=localhost/faas-sandbox:container-test
NAME_PREFIX="faas-container-test-$$"
COLD=false
[ "${1:-}" = "--cold" ] && COLD=true

# podman's network helper (netavark) runs iptables from PATH: a caller's PATH without the sbin
# dirs fails every container that starts, with "netavark: No such file or directory".
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

START=$(date +%s)
WORK=$(mktemp -d /var/tmp/faas-container-test.XXXXXX)
CONTAINERS=()

step() {
  printf '\n== [%4ss] %s\n' "$(($(date +%s) - START))" "$*"
}

fail() {
  echo "container_test: $*" >&2
  exit 1
}

cleanup() {
  local status=$?
  if [ "${FAAS_KEEP:-}" != 1 ]; then
    for name in "${CONTAINERS[@]}"; do
      podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$WORK"
  if [ "$status" -eq 0 ]; then
    printf '\ncontainer test: passed in %ss\n' "$(($(date +%s) - START))"
  else
    printf '\ncontainer test: FAILED (exit %s) after %ss\n' "$status" "$(($(date +%s) - START))" >&2
  fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step "preflight"
[ "$(id -u)" = 0 ] || fail "expected to run as root (rootful podman, debootstrap), got uid $(id -u)"
for tool in podman deno openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
[ -s "$EXTRA_CA" ] || fail "FAAS_EXTRA_CA=$EXTRA_CA is not a readable PEM bundle"
mkdir -p "$CACHE"
echo "podman $(podman version --format '{{.Client.Version}}'), cgroup $(podman info --format '{{.Host.CgroupsVersion}}'), cache $CACHE"

# crun refuses a cgroup v1 host whose v2 hierarchy holds controllers ("hybrid" mode); runc
# runs there.
RUNTIME=()
if grep -qs . /sys/fs/cgroup/unified/cgroup.controllers; then
  command -v runc >/dev/null || fail "cgroup hybrid host: crun refuses it, and runc is not installed"
  RUNTIME=(--runtime runc)
  echo "cgroup v1 with controllers in the v2 hierarchy ($(cat /sys/fs/cgroup/unified/cgroup.controllers)): using runc"
fi

# The base name the Dockerfile builds FROM; a digest cannot be imported, so a pinned digest
# is replaced by the plain tag for this build.
BASE=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
[ -n "$BASE" ] || fail "no ARG DEBIAN_IMAGE in the Dockerfile"
BASE=${BASE%%@*}
BASE_TARBALL="$CACHE/debian-bookworm-minbase.tar"
BASE_LABEL=org.faas-sandbox.base=debootstrap

BUILD_CACHE=(--layers)
if [ "$COLD" = true ]; then
  step "cold start: dropping the cached base and the imported base; building without cache"
  rm -f "$BASE_TARBALL"
  if [ "$(podman image inspect --format '{{index .Labels "org.faas-sandbox.base"}}' "$BASE" 2>/dev/null)" = debootstrap ]; then
    podman untag "$BASE"
  fi
  BUILD_CACHE=(--no-cache)
fi

# ---------------------------------------------------------------------------------------------
step "base image $BASE"
if podman image exists "$BASE"; then
  origin=$(podman image inspect --format '{{index .Labels "org.faas-sandbox.base"}}' "$BASE")
  echo "using the existing image $BASE (${origin:-not made by this script})"
else
  if [ ! -s "$BASE_TARBALL" ]; then
    command -v debootstrap >/dev/null || fail "debootstrap not found (Debian package debootstrap)"
    rootfs="$WORK/rootfs"
    echo "debootstrap --variant=minbase bookworm from $MIRROR"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
      { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
    # As Debian's own images: deb822 sources with updates and security, no package lists.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    tar --numeric-owner -C "$rootfs" -cf "$BASE_TARBALL.tmp" .
    mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"
    rm -rf "$rootfs"
    echo "cached $BASE_TARBALL ($(du -h "$BASE_TARBALL" | cut -f1))"
  else
    echo "cached $BASE_TARBALL"
  fi
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' --change "LABEL $BASE_LABEL" \
    "$BASE_TARBALL" "$BASE" >/dev/null
  echo "imported as $BASE"
fi

# ---------------------------------------------------------------------------------------------
step "build $IMAGE with the build secret extra_ca"
# The secret: the given bundle plus a marker CA made for this test alone (kept in the cache so
# that layers cached by an earlier run are checked against the same marker).
MARKER="$CACHE/build-secret-marker.pem"
if [ ! -s "$MARKER" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -days 3650 \
    -subj "/CN=faas-sandbox build secret marker $(openssl rand -hex 8)" \
    -out "$MARKER.tmp" 2>/dev/null
  mv "$MARKER.tmp" "$MARKER"
fi
SECRET="$WORK/extra_ca.pem"
cat "$EXTRA_CA" "$MARKER" >"$SECRET"
build_start=$(date +%s)
podman build "${RUNTIME[@]}" "${BUILD_CACHE[@]}" --pull=never --secret "id=extra_ca,src=$SECRET" -t "$IMAGE" . \
  >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "podman build failed"; }
echo "built in $(($(date +%s) - build_start))s: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)," \
  "$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

# ---------------------------------------------------------------------------------------------
step "no layer and no history entry holds the build secret"
# Patterns: the last base64 line of every certificate that is in the secret but not in
# Debian's own CA bundle (the marker, and the extra CAs of this host when it has any). The
# Debian bundle itself may legitimately be in a build stage; these certificates may not.
patterns="$WORK/patterns"
awk '/-----END CERTIFICATE-----/ { print last } { last = $0 }' "$MARKER" >"$patterns"
for crt in /usr/local/share/ca-certificates/*.crt; do
  if [ -s "$crt" ]; then
    awk '/-----END CERTIFICATE-----/ { print last } { last = $0 }' "$crt" >>"$patterns"
  fi
done
grep -q . "$patterns" || fail "no certificate lines to look for"

# Fails (non-zero) when a layer, a file name or the history of image $1 holds a certificate of
# the secret; prints how much it searched. (grep reads to the end, without -q: with pipefail,
# a grep that stops at the first match would fail the pipeline through tar's SIGPIPE.)
scan_image() {
  local image=$1 dir="$WORK/scan" layers=0 layer
  if podman history --no-trunc --format '{{.CreatedBy}}' "$image" | grep -F -f "$patterns" >/dev/null; then
    echo "the history of $image holds a certificate of the build secret" >&2
    return 1
  fi
  rm -rf "$dir" && mkdir "$dir"
  podman save --quiet --format docker-archive -o "$dir/image.tar" "$image"
  tar -xf "$dir/image.tar" -C "$dir"
  while IFS= read -r layer; do
    layers=$((layers + 1))
    if tar -xOf "$dir/$layer" | grep -a -F -f "$patterns" >/dev/null; then
      echo "layer $layer of $image holds a certificate of the build secret" >&2
      return 1
    fi
    if tar -tf "$dir/$layer" | grep 'extra_ca' >/dev/null; then
      echo "layer $layer of $image holds a file named after the build secret" >&2
      return 1
    fi
  done < <(jq -r '.[0].Layers[]' "$dir/manifest.json")
  rm -rf "$dir"
  echo "searched the history and $layers layers of $image for $(wc -l <"$patterns") certificate(s): none found"
}
scan_image "$IMAGE" || fail "the build secret leaked into the image"

# ---------------------------------------------------------------------------------------------
step "the scan finds a secret that was left in a layer (control)"
# The same scan, on a throwaway image that copies the secret into a layer: it must find it.
control_dir="$WORK/control"
mkdir "$control_dir"
printf 'FROM %s\nRUN --mount=type=secret,id=extra_ca cp /run/secrets/extra_ca /leaked.pem\n' "$BASE" \
  >"$control_dir/Dockerfile"
podman build "${RUNTIME[@]}" --pull=never --secret "id=extra_ca,src=$SECRET" \
  -t localhost/faas-sandbox:scan-control "$control_dir" >"$WORK/control.log" 2>&1 ||
  { tail -n 20 "$WORK/control.log" >&2; fail "the control image did not build"; }
if ! scan_image localhost/faas-sandbox:scan-control >/dev/null 2>&1; then
  echo "found it, as it must"
else
  fail "the scan missed a secret copied into a layer: it proves nothing"
fi
podman rmi -f localhost/faas-sandbox:scan-control >/dev/null

# ---------------------------------------------------------------------------------------------
step "podman flags from deploy/compose.yaml + deploy/compose.podman.yaml (service all)"
COMPOSE_FILES=(deploy/compose.yaml deploy/compose.podman.yaml)
deno run --quiet --allow-read --allow-env deploy/compose_flags.ts all "${COMPOSE_FILES[@]}" \
  >"$WORK/flags" || fail "could not turn compose.yaml into podman flags"
deno run --quiet --allow-read --allow-env deploy/compose_flags.ts --env all "${COMPOSE_FILES[@]}" \
  >"$WORK/env" || fail "could not read the environment of compose.yaml"
mapfile -t FLAGS <"$WORK/flags"
mapfile -t COMPOSE_ENV <"$WORK/env"
if grep -q -- '^auto' "$WORK/flags"; then
  if ! grep -qs '^containers:' /etc/subuid || ! grep -qs '^containers:' /etc/subgid; then
    fail "userns auto needs a \"containers\" range in /etc/subuid and /etc/subgid" \
      "(e.g. containers:2147483647:2147483648; .ci/run adds it)"
  fi
fi
# What this host adds to any container: the OCI runtime, and resource limits it can grant
# (without CAP_SYS_RESOURCE nothing gets more than this shell's hard limits, and podman 4
# itself runs with RLIMIT_NPROC 32768).
HOST_FLAGS=("${RUNTIME[@]}")
cap_eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ $(((0x$cap_eff >> 24) & 1)) -eq 0 ]; then
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nproc" -gt 32768 ] && nproc=32768
  for i in "${!FLAGS[@]}"; do
    if [ "${FLAGS[$i]}" = --ulimit ] && [[ "${FLAGS[$((i + 1))]}" == nofile=* ]]; then
      hard=${FLAGS[$((i + 1))]##*:}
      if [ "$hard" -gt "$nofile" ]; then
        echo "note: nofile ${FLAGS[$((i + 1))]#nofile=} lowered to $nofile:$nofile," \
          "this host's hard limit (it lacks CAP_SYS_RESOURCE)"
        FLAGS[i + 1]="nofile=$nofile:$nofile"
      fi
    fi
  done
  HOST_FLAGS+=(--ulimit "nproc=$nproc:$nproc")
  echo "note: --ulimit nproc=$nproc:$nproc added (podman's default exceeds what this host grants)"
fi
echo "podman run ${HOST_FLAGS[*]} ${FLAGS[*]}"

json_array() {
  printf '%s\n' "$@" | jq -R . | jq -sc .
}

# ---------------------------------------------------------------------------------------------
step "the jail's operations under these privileges (deploy/privileges_probe.py)"
podman run --rm "${HOST_FLAGS[@]}" "${FLAGS[@]}" "$IMAGE" python3 deploy/privileges_probe.py --json \
  >"$WORK/probe.json" || fail "the privilege probe did not run in the container"
jq -r '.checks | to_entries[] | "  \(.key): \(.value)"' "$WORK/probe.json"
jq -r '.context | "  context: \(.)"' "$WORK/probe.json"

# Starts the image as service "all" with compose's privileges and environment, the given
# settings on top, and waits until /health says healthy; sets NAME and URL.
start_container() {
  local name="$NAME_PREFIX-$1"
  shift
  local env_flags=()
  for kv in "${COMPOSE_ENV[@]}" "$@"; do
    env_flags+=(--env "$kv")
  done
  CONTAINERS+=("$name")
  podman run -d --name "$name" "${HOST_FLAGS[@]}" "${FLAGS[@]}" "${env_flags[@]}" \
    "$IMAGE" >/dev/null || fail "container $name did not start"
  # The container's own address on the bridge, and no published port: publishing one adds DNAT
  # rules for a random local port that the runtime does not always remove (stale ones were
  # found here), and a later local server that draws the same port is unreachable.
  local address url
  address=$(podman inspect --format '{{.NetworkSettings.IPAddress}}' "$name")
  [ -n "$address" ] || fail "container $name has no address on podman's bridge"
  url="http://$address:8000"
  local deadline=$(($(date +%s) + 120))
  until curl -fsS --max-time 5 "$url/health" 2>/dev/null | jq -e '.status == "healthy"' >/dev/null; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
      podman logs "$name" 2>&1 | tail -n 20 >&2
      fail "container $name exited before becoming healthy"
    fi
    if [ "$(date +%s)" -gt "$deadline" ]; then
      podman logs "$name" 2>&1 | tail -n 40 >&2
      echo "last answer of $url/health:" >&2
      curl -sS --max-time 5 -w '\nHTTP %{http_code}\n' "$url/health" >&2 || true
      fail "container $name not healthy within 120 s"
    fi
    sleep 0.2
  done
  NAME=$name
  URL=$url
}

# Runs deno test files against a container: FAAS_TEST_URL and the settings it runs with.
suite() {
  local url=$1 settings=$2
  shift 2
  FAAS_TEST_URL="$url" FAAS_TEST_ENV="$settings" FAAS_TEST_PROBE="$WORK/probe.json" \
    deno test --allow-all --no-prompt "$@"
}

env_json() {
  local kv json="{}"
  for kv in "${COMPOSE_ENV[@]}" "$@"; do
    json=$(jq -c --arg k "${kv%%=*}" --arg v "${kv#*=}" '. + {($k): $v}' <<<"$json")
  done
  echo "$json"
}

# ---------------------------------------------------------------------------------------------
step "the wire contract against a container"
CONTRACT=(FAAS_POOL_SIZE=2 FAAS_MAX_OUTPUT_BYTES=4096 FAAS_MEMORY_LIMIT_MB=128)
start_container contract "${CONTRACT[@]}"
echo "$NAME healthy at $URL: $(curl -fsS "$URL/health" | jq -c '.sandbox | map_values(.isolation)')"
suite "$URL" "$(env_json "${CONTRACT[@]}")" tests/e2e_contract_test.ts
podman rm -f -t 0 "$NAME" >/dev/null

# ---------------------------------------------------------------------------------------------
step "the JavaScript and Python attack suites against a container"
ATTACKS=(FAAS_POOL_SIZE=2 FAAS_MAX_INSTANCES=8 FAAS_MAX_OUTPUT_BYTES=65536 FAAS_MEMORY_LIMIT_MB=256)
start_container attacks "${ATTACKS[@]}"
echo "$NAME healthy at $URL"
suite "$URL" "$(env_json "${ATTACKS[@]}")" tests/javascript_attacks_test.ts tests/python_attacks_test.ts

# ---------------------------------------------------------------------------------------------
step "probe table, isolation layers against the host's, SIGTERM drain (tests/container_test.ts)"
FAAS_TEST_CONTAINER="$NAME" FAAS_TEST_IMAGE="$IMAGE" \
  FAAS_TEST_PODMAN_FLAGS="$(json_array "${FLAGS[@]}")" \
  FAAS_TEST_PODMAN_HOST_FLAGS="$(json_array "${HOST_FLAGS[@]}")" \
  suite "$URL" "$(env_json "${ATTACKS[@]}")" tests/container_test.ts
