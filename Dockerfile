# faas-sandbox: runs untrusted JavaScript, TypeScript and Python snippets over HTTP.
#
#   podman build -t faas-sandbox:0.1.0 .        # or: docker build (Docker 23 or later)
#
# Run it with the privileges deploy/compose.yaml grants (deploy/README.md#privileges explains
# them); deploy/container_test.sh builds, runs and attacks it with exactly those.
#
# Build arguments and secrets:
#   --build-arg DEBIAN_IMAGE=debian:12.11-slim@sha256:…   the base of every stage, e.g. with a digest
#   --build-arg PYTHON_PACKAGES="numpy==2.1.3 pandas==2.2.3"   extra pip packages for user code
#   --build-arg DENO_VERSION / DENO_SHA512_AMD64 / DENO_SHA512_ARM64   the Deno build and its hashes
#   --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt
#       Optional PEM bundle of extra certificate authorities (e.g. a TLS-intercepting proxy's),
#       trusted by every step that downloads (apt over https, curl of Deno from the npm
#       registry, deno install, pip) and by nothing else: a secret mount exists only while its
#       RUN step runs, and each step deletes the bundles it derives from it, so no layer or
#       history entry of any stage holds it. Without the secret the steps use the image's own
#       trust stores.

# Debian 12 point release; python3 and tini below are pinned to bookworm's versions. For a
# byte-for-byte reproducible base, pin the digest too: --build-arg DEBIAN_IMAGE=debian:12.11-slim@sha256:…
ARG DEBIAN_IMAGE=debian:12.11-slim

# ---------------------------------------------------------------------------------------------
# Stage 1: the Deno binary, taken from the npm registry's platform package and checked against
# the registry's sha512 (a pinned version alone could be re-published; a hash cannot).
FROM ${DEBIAN_IMAGE} AS deno
ARG DENO_VERSION=2.9.6
ARG DENO_SHA512_AMD64=de67784ca2c2bb3b0b0e67cea02e4a37b34065ac525643209bae2f83a7e80f4d090400c2a584b6ff942a5dfce09cfe59433de22cff6f05026d120735d7a380a1
ARG DENO_SHA512_ARM64=a68aa1a07f41de7625a2280430f4f9b7c1d8fb005e8ae79ad409f943b7ea809ccfd126265aca12fe852758efe9122038a1fcc8072d4496dfe29f9f312adc44a1
ARG TARGETARCH
# The extra CA, when given, is apt's only store for https mirrors (the base has no CA store
# before ca-certificates is installed), and is added to the system store for curl.
RUN --mount=type=secret,id=extra_ca \
    set -eux; \
    extra=/run/secrets/extra_ca; apt_tls=""; \
    if [ -s "$extra" ]; then apt_tls="-o Acquire::https::CAInfo=$extra"; fi; \
    apt-get $apt_tls update; \
    apt-get $apt_tls install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    case "${TARGETARCH:-amd64}" in \
      amd64) pkg=linux-x64-glibc; sum="$DENO_SHA512_AMD64" ;; \
      arm64) pkg=linux-arm64-glibc; sum="$DENO_SHA512_ARM64" ;; \
      *) echo "no Deno build for architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem; \
    if [ -s "$extra" ]; then cat "$extra" >> /tmp/ca.pem; fi; \
    curl --cacert /tmp/ca.pem -fsSL -o /tmp/deno.tgz \
      "https://registry.npmjs.org/@deno/${pkg}/-/${pkg}-${DENO_VERSION}.tgz"; \
    echo "${sum}  /tmp/deno.tgz" | sha512sum -c -; \
    tar -xzf /tmp/deno.tgz -C /tmp package/deno; \
    install -m 0755 /tmp/package/deno /usr/local/bin/deno; \
    rm -rf /tmp/ca.pem /tmp/deno.tgz /tmp/package; \
    deno --version | grep -qx "deno ${DENO_VERSION} .*"

# ---------------------------------------------------------------------------------------------
# Stage 2: dependencies resolved exactly as deno.lock says (--frozen fails the build instead of
# updating the lock), then the sources' module graph cached, so the service starts offline.
FROM deno AS deps
ENV DENO_DIR=/deno-dir DENO_NO_UPDATE_CHECK=1
WORKDIR /app
COPY deno.json deno.lock ./
# DENO_CERT adds the extra CA to Deno's built-in roots for this step only.
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then export DENO_CERT=/run/secrets/extra_ca; fi; \
    deno install --frozen
COPY main.ts ./
COPY src ./src
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then export DENO_CERT=/run/secrets/extra_ca; fi; \
    deno install --frozen --entrypoint main.ts $(find src -name '*.ts' ! -name '*_test.ts' | sort)

# ---------------------------------------------------------------------------------------------
# Stage 3: the runtime image.
FROM ${DEBIAN_IMAGE}
# Space-separated pip requirement specifiers, installed into the system python3 for user code
# (/usr/local/lib/python3.11/dist-packages, which the Python sandbox keeps on sys.path).
ARG PYTHON_PACKAGES=""
RUN --mount=type=secret,id=extra_ca \
    set -eux; \
    extra=/run/secrets/extra_ca; apt_tls=""; \
    if [ -s "$extra" ]; then apt_tls="-o Acquire::https::CAInfo=$extra"; fi; \
    apt-get $apt_tls update; \
    apt-get $apt_tls install -y --no-install-recommends python3=3.11.2-1+b1 tini=0.19.0-1+b3; \
    if [ -n "${PYTHON_PACKAGES}" ]; then \
      apt-get $apt_tls install -y --no-install-recommends python3-pip; \
      cert=""; \
      if [ -s "$extra" ]; then \
        cat "$(python3 -c 'import pip._vendor.certifi as c; print(c.where())')" "$extra" > /tmp/ca.pem; \
        cert="--cert /tmp/ca.pem"; \
      fi; \
      pip3 install --no-cache-dir --break-system-packages --root-user-action=ignore $cert ${PYTHON_PACKAGES}; \
      rm -f /tmp/ca.pem; \
      apt-get purge -y --auto-remove python3-pip; \
    fi; \
    rm -rf /var/lib/apt/lists/*

COPY --from=deno /usr/local/bin/deno /usr/local/bin/deno
COPY --from=deps /deno-dir /deno-dir
WORKDIR /app
COPY --from=deps /app ./
COPY deploy/healthcheck.ts deploy/privileges_probe.py deploy/entrypoint.sh ./deploy/
# Runs execute under unprivileged uids that must read the runner code and the Deno cache, never
# write them: everything is root-owned and world-readable, nothing world-writable. No binary
# keeps a setuid or setgid bit: Kubernetes cannot set no_new_privs on a container that adds
# SYS_ADMIN, so nothing in the image may raise a run's privileges at exec.
RUN set -eux; \
    chmod -R a+rX,go-w /app /deno-dir; \
    find / -xdev -perm /6000 -type f -exec chmod a-s {} +

ENV DENO_DIR=/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    PYTHONDONTWRITEBYTECODE=1

# Configuration. Every setting is read from the environment at start; an invalid value stops
# the service with a message naming the variable. Values shown are the defaults.
#   FAAS_PORT=8000              listening port (0 picks a free one)
#   FAAS_HOST=0.0.0.0           listening address
#   FAAS_POOL_SIZE=10           sandboxes booted ahead of demand, per runtime
#   FAAS_MAX_INSTANCES=50       most runs executing at once
#   FAAS_TIMEOUT=30000          run timeout in ms when a request gives none
#   FAAS_MAX_TIMEOUT=60000      largest timeout a request may ask for, ms
#   FAAS_MEMORY_LIMIT_MB=256    memory budget of one sandbox, MiB
#   FAAS_MAX_OUTPUT_BYTES=1048576  cap on stdout and on stderr of one run
#   FAAS_OUTPUT_POLICY=truncate past the cap: truncate (keep head and tail, the run goes on) or
#                               stop (the run ends as output_limit)
#   FAAS_MAX_CODE_BYTES=16777216  largest accepted `code`, UTF-8 bytes (a dataset turn can be large)
#   FAAS_MAX_VALIDATIONS=       most syntax checks at once; default: the number of CPU cores
#   FAAS_QUEUE_LIMIT=1000       queued runs beyond which requests get 503 + Retry-After
#   FAAS_DRAIN_TIMEOUT=30000    on SIGTERM: how long in-flight and queued runs may finish, ms
#   FAAS_API_KEY=               when set, every route but /health needs this key (401 otherwise)
#   FAAS_LANGUAGES=javascript,typescript,python   enabled languages, comma-separated
#   FAAS_PYTHON=python3         Python executable for the Python sandbox
#   FAAS_PYTHON_PRELOAD=        Python modules imported ahead of runs, comma-separated (e.g. json,re)
#   FAAS_REQUIRE_ISOLATION=     isolation layers that must be active or the service refuses to
#                               start, comma-separated (e.g. uid,netns); /health lists the active ones
#   FAAS_DEBUG=false            verbose logs, including code and output
#   FAAS_RUNNER_MODE=auto       how JS runners start: self (re-run this entry), deno (deno run), auto
#   FAAS_MAX_CONNECTIONS=       most HTTP connections open at once; default sized from the
#                               open-file limit, leaving descriptors for the sandboxes
#   FAAS_IDLE_TIMEOUT=30000     ms a connection may go without a request under way (a new one must
#                               send its request head by then); also the most a body may stall
#   FAAS_TENANT_HASH_KEY=       key of the tenant's hash in traces; the same on every replica groups
#                               a tenant's traces across them (default: a random key per process)
# Tracing, through Deno's built-in OpenTelemetry (README.md#observability), e.g.:
#   OTEL_DENO=true OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318
#   OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or http/json) OTEL_SERVICE_NAME=faas-sandbox
ENV FAAS_PORT=8000 \
    FAAS_HOST=0.0.0.0

EXPOSE 8000

# Root inside the container, to build each run's jail and hand it its own unprivileged uid; in a
# user namespace of the container's own, with every capability dropped but SETUID, SETGID, KILL,
# CHOWN, DAC_OVERRIDE, SYS_CHROOT and SYS_ADMIN (deploy/compose.yaml and deploy/k8s/ say how;
# deploy/README.md#privileges says why). deploy/entrypoint.sh refuses SYS_ADMIN without the user
# namespace.
USER 0:0

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["deno", "run", "--no-prompt", "--cached-only", "--allow-net", "--allow-env=FAAS_PORT,FAAS_HOST", "deploy/healthcheck.ts"]

# tini (pid 1) forwards SIGTERM to the service, which drains and exits 0, and reaps the
# orphaned sandbox processes that would otherwise linger as zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "/app/deploy/entrypoint.sh"]
CMD ["deno", "run", "--allow-all", "--no-prompt", "--cached-only", "--frozen", "main.ts"]
