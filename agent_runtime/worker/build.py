"""The one composition root of a worker: everything a :class:`~agent_runtime.worker.loop.Worker`
runs with, built in one place so the CLI (``agent-runtime worker``), benchmarks, tests and
embedders get the same worker:

    built = build_worker(pipeline, "planner", redis, consumer="planner-host-0")
    async with anyio.create_task_group() as tg:
        tg.start_soon(built.observability.run_collector, redis)
        await built.worker.run()

* the codec, signing and verifying unless the config says ``signing: off`` (keys:
  agent_runtime/signing.py), as the :class:`~agent_runtime.client.Client`'s is, with the agent
  type's size limit;
* observability (observer, trace middleware, Prometheus metrics when ``metrics_port`` is set);
* the agent type's resilience policies (its ``policies:`` block) and their middleware, with
  the breaker-state gauge as a breaker listener when metrics are on;
* the agent's typed :class:`~agent_runtime.agent.Services`: those policies (LLM providers and
  tools run their calls under them), the metrics, the process's redactor, and an optional
  LLM provider that replaces the configured one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_runtime.agent import Services
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.llm.base import LLMProvider
from agent_runtime.observability.process import WorkerObservability
from agent_runtime.observability.redaction import env_redactor
from agent_runtime.policies.middleware import Policies
from agent_runtime.policies.ratelimit import MessageRateMiddleware
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.worker.delivery import Middleware, PolicyMiddleware
from agent_runtime.worker.loop import Worker


@dataclass(frozen=True, slots=True)
class BuiltWorker:
    """A worker and the parts of it a host still drives (the metrics collector)."""

    worker: Worker
    policies: Policies
    observability: WorkerObservability


def build_worker(
    pipeline: Pipeline,
    agent: str,
    redis: Any,
    *,
    consumer: str,
    cluster: bool = False,
    metrics_port: int | None = None,
    llm: LLMProvider | None = None,
    middleware: Sequence[Middleware] = (),
    transport: RedisTransport | MemoryTransport | None = None,
) -> BuiltWorker:
    """The worker of agent type ``agent`` with everything it runs with (module docstring).
    ``middleware`` runs outside the policy middleware (e.g. a test's probe); ``transport``
    replaces the Redis transport on ``redis`` (agent_runtime.testing.TestPipeline: in memory)."""
    obs = WorkerObservability.create(pipeline, agent, metrics_port)
    handler_timeout = pipeline.worker_settings(agent).handler_timeout
    listeners = [obs.metrics.breaker_listener()] if obs.metrics is not None else []
    rates = obs.metrics.rate_observer() if obs.metrics is not None else None
    policies = Policies.for_agent(pipeline, agent, redis, listeners=listeners, rate_observer=rates)
    policies.check()  # bad error paths in the policies fail here, at start-up
    services = Services(
        policies=policies,
        llm=llm,
        metrics=obs.metrics,
        redactor=env_redactor().with_config(pipeline.config),
    )
    worker = Worker(
        pipeline,
        agent,
        redis,
        consumer=consumer,
        cluster=cluster,
        codec=pipeline.codec(agent),
        observer=obs.observer,
        middleware=[
            *middleware,
            *obs.middleware,
            PolicyMiddleware(policies.handler, policies.clock, handler_timeout=handler_timeout),
            *_message_rate(policies, handler_timeout),
        ],
        services=services,
        transport=transport,
    )
    return BuiltWorker(worker, policies, obs)


def _message_rate(policies: Policies, handler_timeout: float) -> list[MessageRateMiddleware]:
    """The agent type's fleet-wide ``rate_limit:``, inside the deadline scope (if set)."""
    limiter = policies.message_limiter
    return [] if limiter is None else [MessageRateMiddleware(limiter, handler_timeout + 10)]
