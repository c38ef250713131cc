"""Prometheus metrics of one worker process: a :class:`Metrics` (its own registry, no global
state), the :class:`PrometheusObserver` the worker calls on each delivery step, a
:class:`StreamCollector` that polls consumer-group lag and pending ages, and hooks for the
breakers (:meth:`Metrics.breaker_listener`) and LLM providers (:meth:`Metrics.record_llm`).

Agents and policies reach the process's Metrics through ``runtime.metrics``.
Served by :meth:`Metrics.serve` on ``worker --metrics-port`` / ``AGENT_RUNTIME_METRICS_PORT``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from agent_runtime.agent import MessageContext
from agent_runtime.observability.probes import Probes, serve
from agent_runtime.transport.streams import Entry
from agent_runtime.worker.observer import Observer

HANDLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
BREAKER_STATES = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}


class Metrics:
    """Every metric of the runtime, registered on one :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # the process (RSS, CPU, open fds), the interpreter's GC and version: own instances on
        # this registry (the module-level ones live on the global registry)
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        by_type = ["agent", "message_type"]
        self.handled = Counter(
            "agent_runtime_messages_handled", "Messages handled successfully", by_type, registry=r
        )
        self.failed = Counter(
            "agent_runtime_messages_failed",
            "Handler attempts that raised (each is retried or dead-lettered)",
            [*by_type, "error"],
            registry=r,
        )
        self.retried = Counter(
            "agent_runtime_messages_retried",
            "Handler attempts that asked for a retry (Retry raised)",
            [*by_type, "reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "agent_runtime_messages_dead_lettered",
            "Messages moved to the dead-letter stream",
            [*by_type, "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "agent_runtime_duplicates_dropped",
            "Deliveries dropped because the message was already done",
            ["agent"],
            registry=r,
        )
        self.handle_seconds = Histogram(
            "agent_runtime_handle_duration_seconds",
            "Handler run time (successful and failed attempts)",
            by_type,
            buckets=HANDLE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "agent_runtime_commit_duration_seconds",
            "Round trip of one commit pipeline",
            ["agent"],
            buckets=HANDLE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "agent_runtime_in_flight_messages",
            "Messages held by this worker (handling or awaiting commit/retry)",
            ["agent"],
            registry=r,
        )
        self._stream_metrics(r)
        self._llm_metrics(r)
        self._rate_metrics(r)

    def _stream_metrics(self, r: CollectorRegistry) -> None:
        self.reclaimed = Counter(
            "agent_runtime_messages_reclaimed",
            "Entries reclaimed from dead or stuck consumers",
            ["stream"],
            registry=r,
        )
        self.deleted_pending = Counter(
            "agent_runtime_deleted_pending_entries",
            "Pending entries found deleted by trimming (alarm)",
            ["stream"],
            registry=r,
        )
        self.lag = Gauge(
            "agent_runtime_consumer_group_lag_messages",
            "Entries not yet delivered to the group (XINFO GROUPS lag)",
            ["stream", "group"],
            registry=r,
        )
        self.pending = Gauge(
            "agent_runtime_pending_messages",
            "Entries delivered but not acknowledged",
            ["stream", "group"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "agent_runtime_oldest_pending_age_seconds",
            "Age of the oldest pending entry (since it was added)",
            ["stream", "group"],
            registry=r,
        )
        self.stream_length = Gauge(
            "agent_runtime_stream_length_messages", "XLEN of a stream", ["stream"], registry=r
        )

    def _llm_metrics(self, r: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "agent_runtime_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["breaker"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "agent_runtime_llm_tokens", "LLM tokens used", ["provider", "model", "kind"], registry=r
        )
        self.llm_cost = Counter(
            "agent_runtime_llm_cost_usd",
            "LLM cost in US dollars",
            ["provider", "model"],
            registry=r,
        )
        self.llm_calls = Counter(
            "agent_runtime_llm_calls",
            "LLM calls (cache hits included)",
            ["provider", "model", "cached"],
            registry=r,
        )

    def _rate_metrics(self, r: CollectorRegistry) -> None:
        self.rate_wait_seconds = Histogram(
            "agent_runtime_rate_limit_wait_seconds",
            "Time a call waited for its place in a fleet rate limit (0: admitted at once)",
            ["limit"],
            buckets=RATE_WAIT_BUCKETS,
            registry=r,
        )
        self.rate_waited = Counter(
            "agent_runtime_rate_limit_waits",
            "Calls that had to wait for a fleet rate limit",
            ["limit"],
            registry=r,
        )
        self.rate_refused = Counter(
            "agent_runtime_rate_limit_refused",
            "Calls refused by a fleet rate limit: deadline (the next place frees after the "
            "request's deadline) or too_large (more than the limit admits in a window)",
            ["limit", "reason"],
            registry=r,
        )
        self.rate_waiting = Gauge(
            "agent_runtime_rate_limit_waiting_calls",
            "Calls of this process waiting for a fleet rate limit now",
            ["limit"],
            registry=r,
        )

    def rate_observer(self) -> RateMetrics:
        """The fleet rate limiters' observer (agent_runtime/policies/ratelimit.py)."""
        return RateMetrics(self)

    # ------------------------------------------------------------------ hooks for others
    def record_llm(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        cached: bool = False,
    ) -> None:
        """Account one LLM call (call it from the provider layer)."""
        self.llm_calls.labels(provider, model, str(cached).lower()).inc()
        if input_tokens:
            self.llm_tokens.labels(provider, model, "input").inc(input_tokens)
        if output_tokens:
            self.llm_tokens.labels(provider, model, "output").inc(output_tokens)
        if cost_usd:
            self.llm_cost.labels(provider, model).inc(cost_usd)

    def record_usage(self, usage: Any) -> None:
        """Account an ``agent_runtime.llm.base.Usage`` (provider, model, tokens, cost, cached)."""
        self.record_llm(
            usage.provider,
            usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            cached=usage.cached,
        )

    def set_breaker_state(self, name: str, state: str) -> None:
        """Set a breaker's gauge from its state name (closed, half-open, open)."""
        self.breaker_state.labels(name).set(BREAKER_STATES.get(str(state).lower(), -1))

    def breaker_listener(self) -> Any:
        """A ``pybreaker.CircuitBreakerListener`` that mirrors state changes into the gauge."""
        import pybreaker

        metrics = self

        class _Listener(pybreaker.CircuitBreakerListener):
            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                metrics.set_breaker_state(str(cb.name), str(getattr(new_state, "name", new_state)))

        return _Listener()

    def serve(
        self,
        port: int,
        addr: str = "0.0.0.0",  # noqa: S104 - scraped remotely
        probes: Probes | None = None,
    ) -> Any:
        """Serve ``/metrics`` (and ``/healthz``, ``/readyz`` with ``probes``) on ``port``
        from a daemon thread; returns the server (agent_runtime/observability/probes.py)."""
        return serve(port, self.registry, probes, addr)


class RateMetrics:
    """Feeds a rate limiter's waits into :class:`Metrics` (``RateObserver``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def waiting(self, limit: str, delta: int) -> None:
        self.metrics.rate_waiting.labels(limit).inc(delta)
        if delta > 0:
            self.metrics.rate_waited.labels(limit).inc()

    def acquired(self, limit: str, seconds: float) -> None:
        self.metrics.rate_wait_seconds.labels(limit).observe(seconds)

    def refused(self, limit: str, reason: str, seconds: float) -> None:
        self.metrics.rate_refused.labels(limit, reason).inc()
        self.metrics.rate_wait_seconds.labels(limit).observe(seconds)


class PrometheusObserver(Observer):
    """Feeds a worker's delivery hooks into :class:`Metrics`. One per worker (one agent).

    The labelled children of the per-message and per-commit hooks are looked up once
    (``.labels()`` formats and hashes the label values on every call): per message type for
    ``handled``, once for ``in_flight`` and ``committed``."""

    def __init__(self, metrics: Metrics, agent: str) -> None:
        self.metrics = metrics
        self.agent = agent
        self._in_flight = metrics.in_flight.labels(agent)
        self._in_flight.set(0)
        self._commit_seconds = metrics.commit_seconds.labels(agent)
        #: message type -> (handled counter, handle_seconds histogram) of this agent
        self._handled: dict[str, tuple[Any, Any]] = {}

    def handled(self, ctx: MessageContext, seconds: float) -> None:
        message_type = ctx.message.message_type
        children = self._handled.get(message_type)
        if children is None:
            children = (
                self.metrics.handled.labels(self.agent, message_type),
                self.metrics.handle_seconds.labels(self.agent, message_type),
            )
            if len(self._handled) < 1024:  # message types are few; never grow unbounded
                self._handled[message_type] = children
        children[0].inc()
        children[1].observe(seconds)

    def failed(self, ctx: MessageContext, error: BaseException, seconds: float) -> None:
        message_type = ctx.message.message_type
        self.metrics.failed.labels(self.agent, message_type, type(error).__name__).inc()
        self.metrics.handle_seconds.labels(self.agent, message_type).observe(seconds)

    def retried(self, ctx: MessageContext, reason: str) -> None:
        self.metrics.retried.labels(self.agent, ctx.message.message_type, _label(reason)).inc()

    def dead_lettered(self, entry: Entry, reason: str, message_type: str | None) -> None:
        self.metrics.dead_lettered.labels(self.agent, message_type or "unknown", reason).inc()

    def duplicate_dropped(self, entry: Entry) -> None:
        self.metrics.duplicates.labels(self.agent).inc()

    def reclaimed(self, stream: str, count: int, deleted: int) -> None:
        if count:
            self.metrics.reclaimed.labels(stream).inc(count)
        if deleted:
            self.metrics.deleted_pending.labels(stream).inc(deleted)

    def in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def committed(self, messages: int, seconds: float) -> None:
        self._commit_seconds.observe(seconds)


def _label(reason: str) -> str:
    """Bound label cardinality: free-text reasons are cut to their first word."""
    word = (reason or "unspecified").split(":", 1)[0].split()[0] if reason.strip() else ""
    return word[:40] or "unspecified"
