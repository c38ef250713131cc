# syntax=docker/dockerfile:1
# One image for every agent type:  docker run IMAGE planner  ==  agent-runtime worker planner
# Config:  AGENT_RUNTIME_CONFIG (default /app/configs/default.yaml), Redis: AGENT_RUNTIME_REDIS_URL.
# Health:  AGENT_RUNTIME_AGENT must name the same agent type (see deploy/docker/healthcheck.sh).
ARG PYTHON_VERSION=3.12

# ---- build: a virtualenv with the package and its dependencies (wheels only) ----------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY agent_runtime ./agent_runtime
COPY agents ./agents
COPY protocols ./protocols
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --no-binary=agent-runtime . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---- runtime: slim base, the venv, the configs, a non-root user ------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENT_RUNTIME_CONFIG=/app/configs/default.yaml \
    AGENT_RUNTIME_HOME=/tmp/agent-runtime
# procps: `uptime` for the default executor's shell allow-list (configs/default.yaml)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid agent --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin agent
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root configs /app/configs
COPY --chown=root:root --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/agent-runtime-healthcheck
WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["agent-runtime-healthcheck"]
ENTRYPOINT ["agent-runtime", "worker"]
CMD ["intent_parser"]
