# One image for every agent type:  docker run IMAGE planner  ==  agent-runtime worker planner
# Config:  AGENT_RUNTIME_CONFIG (default /app/configs/default.yaml), Redis: AGENT_RUNTIME_REDIS_URL.
# Health:  GET /healthz (liveness) and /readyz (readiness) on AGENT_RUNTIME_METRICS_PORT (9100),
#          next to /metrics; the HEALTHCHECK calls /healthz (deploy/docker/healthcheck.sh).
# Build:   docker build -t agent-runtime .                    (Debian packages and PyPI wheels)
#          python deploy/docker/build_offline.py --tag agent-runtime   (podman, no network in the
#          build: a Debian base made with mmdebstrap, wheels from a host wheelhouse; see
#          docs/deployment.md "Building the image without a registry")
# Python is Debian's python3 (bookworm: 3.11), so the same base can be made with mmdebstrap.
ARG BASE_IMAGE=debian:bookworm-slim

# ---- base: Debian with python3, venv, procps (installed unless the base has them) --------
FROM ${BASE_IMAGE} AS base
# procps: `uptime` for the default executor's shell allow-list (configs/default.yaml)
# hadolint ignore=DL3008
RUN if ! dpkg -s python3 python3-venv procps ca-certificates >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install --yes --no-install-recommends \
           python3 python3-venv procps ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---- build: a virtualenv with the package and its dependencies (wheels only) ----------
FROM base AS build
# PIP_OFFLINE=1: install only from the wheelhouse/ directory of the build context (no index)
ARG PIP_OFFLINE=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
# the wheelhouse when the context has one (README.md keeps the pattern matching without it)
COPY README.md wheelhous[e] /wheelhouse/
COPY agent_runtime ./agent_runtime
COPY agents ./agents
COPY protocols ./protocols
RUN if [ -n "$PIP_OFFLINE" ]; then set -- --no-index --find-links /wheelhouse; fi \
    && /opt/venv/bin/pip install --no-cache-dir "$@" \
       --only-binary=:all: --no-binary=agent-runtime . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools
# pip compiled every module at install: the .pyc files stay in the image, so a container's
# worker imports them instead of compiling agent_runtime, redis, pydantic, ... at each start
# (PYTHONDONTWRITEBYTECODE only stops writing new ones into the read-only image).

# ---- runtime: the base, the venv, the configs, a non-root user ---------------------------
FROM base AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENT_RUNTIME_CONFIG=/app/configs/default.yaml \
    AGENT_RUNTIME_HOME=/tmp/agent-runtime \
    AGENT_RUNTIME_METRICS_PORT=9100
RUN groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid agent --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin agent
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root configs /app/configs
COPY --chown=root:root --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/agent-runtime-healthcheck
WORKDIR /app
USER 10001:10001
EXPOSE 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["agent-runtime-healthcheck"]
ENTRYPOINT ["agent-runtime", "worker"]
CMD ["intent_parser"]
