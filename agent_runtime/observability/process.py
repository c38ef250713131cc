"""What a worker process gets from observability, in one object: the observer, the trace
middleware, the metrics agents get (``Services(metrics=obs.metrics)``), and the background
stream collector. agent_runtime/worker/build.py puts them together:

    obs = WorkerObservability.create(pipeline, "planner", metrics_port=9100)
    worker = Worker(..., observer=obs.observer, middleware=obs.middleware,
                    services=Services(metrics=obs.metrics))
    tg.start_soon(obs.run_collector, redis)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import AgentRuntimeError, ConfigError
from agent_runtime.observability.tracing import TraceContextMiddleware
from agent_runtime.transport.inspect import RedisClient, RuntimeReader
from agent_runtime.worker.observer import Observer

if TYPE_CHECKING:  # imported where metrics are on: prometheus_client is not loaded otherwise
    from agent_runtime.observability.metrics import Metrics
    from agent_runtime.observability.probes import Probes

METRICS_PORT_ENV = "AGENT_RUNTIME_METRICS_PORT"
COLLECT_INTERVAL_ENV = "AGENT_RUNTIME_METRICS_INTERVAL"


def metrics_port_from_env() -> int | None:
    value = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{METRICS_PORT_ENV}={value!r} is not a TCP port")
    return int(value)


@dataclass
class WorkerObservability:
    agent: str
    streams: list[str]
    metrics: Metrics | None = None
    observer: Observer = field(default_factory=Observer)
    middleware: list[Any] = field(default_factory=list)
    interval: float = 5.0
    probes: Probes | None = None

    @classmethod
    def create(
        cls, pipeline: Pipeline, agent: str, metrics_port: int | None
    ) -> WorkerObservability:
        """Metrics only when ``metrics_port`` is set (served at once); the trace-context
        middleware only when an OpenTelemetry tracer records spans (without one, outputs get
        the hop's trace context when queued and the layer would cost every message a
        coroutine for nothing)."""
        tracing = TraceContextMiddleware()
        obs = cls(
            agent,
            pipeline.routing.inboxes(agent),
            middleware=[tracing] if tracing.tracer is not None else [],
        )
        obs.interval = float(os.environ.get(COLLECT_INTERVAL_ENV) or 5.0)
        if metrics_port is not None:
            # here, not at the top: without a metrics port a worker never loads
            # prometheus_client (docs/benchmarks.md "Issue 17: start time", second pass)
            from agent_runtime.observability.metrics import Metrics, PrometheusObserver
            from agent_runtime.observability.probes import Probes

            obs.metrics = Metrics()
            obs.observer = PrometheusObserver(obs.metrics, agent)
            group = pipeline.config.keys.group(agent)
            obs.probes = Probes.from_env(agent, group, obs.streams)
            try:
                obs.metrics.serve(metrics_port, probes=obs.probes)
            except OSError as exc:
                raise AgentRuntimeError(
                    f"cannot serve metrics on port {metrics_port}: {exc.strerror}"
                ) from exc
            structlog.get_logger("agent_runtime.metrics").info(
                "metrics_served", port=metrics_port, agent=agent
            )
        return obs

    async def run_collector(self, redis: RedisClient) -> None:
        """Poll lag/pending of the agent's inboxes into the gauges, and keep the probes'
        state current (/healthz, /readyz: agent_runtime/observability/probes.py); a no-op
        without metrics."""
        if self.metrics is None:
            return
        from agent_runtime.observability.collector import StreamCollector

        reader = RuntimeReader(redis)
        collector = StreamCollector(reader, self.metrics, self.streams, self.interval)
        async with anyio.create_task_group() as tg:
            if self.probes is not None:
                tg.start_soon(self.probes.run, redis)
            tg.start_soon(collector.run)

    def draining(self) -> None:
        """The worker stops taking work (SIGTERM): /readyz answers 503 from now on."""
        if self.probes is not None:
            self.probes.draining = True
