"""Prometheus metrics: observer hooks, stream collector (fakeredis: XINFO/XPENDING only, no
blocking reads), breaker listener and LLM accounting."""

from __future__ import annotations

import time
import uuid

import fakeredis
import pybreaker
import pytest
import structlog

from agent_runtime.agent import MessageContext
from agent_runtime.config.routing import Routing
from agent_runtime.observability.collector import StreamCollector
from agent_runtime.observability.metrics import Metrics, PrometheusObserver
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import Entry
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow

pytestmark = pytest.mark.anyio


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def context(message_type: str = "user.request") -> MessageContext:
    message = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="echo",
        message_type=message_type,
        schema_version=1,
        payload={"text": "hi"},
        timestamp=utcnow(),
    )
    return MessageContext(
        agent="echo",
        message=message,
        payload=UserRequest(text="hi"),
        stream="p:inbox:echo",
        entry_id=b"1-1",
        delivery_count=1,
        routing=Routing(Keys("p"), {}),
        log=structlog.get_logger(),
    )


def test_observer_counts_each_outcome_by_agent_and_type() -> None:
    metrics = Metrics()
    observer = PrometheusObserver(metrics, "echo")
    for _ in range(3):
        observer.handled(context(), 0.02)
    observer.failed(context(), RuntimeError("x"), 0.5)
    observer.retried(context(), "rate limited: slow down")
    observer.dead_lettered(Entry("p:inbox:echo", b"1-1", {}), "max_deliveries", "user.request")
    observer.dead_lettered(Entry("p:inbox:echo", b"1-2", {}), "undecodable", None)
    observer.duplicate_dropped(Entry("p:inbox:echo", b"1-3", {}))
    observer.reclaimed("p:inbox:echo", 2, 1)
    observer.in_flight(4)
    labels = {"agent": "echo", "message_type": "user.request"}
    assert value(metrics, "agent_runtime_messages_handled_total", **labels) == 3
    assert (
        value(metrics, "agent_runtime_messages_failed_total", **labels, error="RuntimeError") == 1
    )
    assert value(metrics, "agent_runtime_messages_retried_total", **labels, reason="rate") == 1
    assert (
        value(
            metrics, "agent_runtime_messages_dead_lettered_total", **labels, reason="max_deliveries"
        )
        == 1
    )
    assert (
        value(
            metrics,
            "agent_runtime_messages_dead_lettered_total",
            agent="echo",
            message_type="unknown",
            reason="undecodable",
        )
        == 1
    )
    assert value(metrics, "agent_runtime_duplicates_dropped_total", agent="echo") == 1
    assert value(metrics, "agent_runtime_messages_reclaimed_total", stream="p:inbox:echo") == 2
    assert value(metrics, "agent_runtime_deleted_pending_entries_total", stream="p:inbox:echo") == 1
    assert value(metrics, "agent_runtime_in_flight_messages", agent="echo") == 4
    assert value(metrics, "agent_runtime_handle_duration_seconds_count", **labels) == 4
    assert value(metrics, "agent_runtime_handle_duration_seconds_sum", **labels) == pytest.approx(
        0.56
    )


def test_two_metrics_objects_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()
    PrometheusObserver(first, "a").handled(context(), 0.1)
    labels = {"agent": "a", "message_type": "user.request"}
    assert value(first, "agent_runtime_messages_handled_total", **labels) == 1
    assert value(second, "agent_runtime_messages_handled_total", **labels) == 0


def test_breaker_listener_mirrors_state_changes() -> None:
    metrics = Metrics()
    breaker = pybreaker.CircuitBreaker(
        fail_max=1, reset_timeout=60, name="llm.openai", listeners=[metrics.breaker_listener()]
    )
    with pytest.raises(pybreaker.CircuitBreakerError), breaker.calling():
        raise ZeroDivisionError
    assert value(metrics, "agent_runtime_breaker_state", breaker="llm.openai") == 2
    metrics.set_breaker_state("llm.openai", "closed")
    assert value(metrics, "agent_runtime_breaker_state", breaker="llm.openai") == 0


def test_llm_usage_is_accounted_by_provider_and_model() -> None:
    metrics = Metrics()
    metrics.record_llm("anthropic", "claude-x", input_tokens=100, output_tokens=20, cost_usd=0.0015)
    metrics.record_llm("anthropic", "claude-x", input_tokens=50, cached=True)
    labels = {"provider": "anthropic", "model": "claude-x"}
    assert value(metrics, "agent_runtime_llm_tokens_total", **labels, kind="input") == 150
    assert value(metrics, "agent_runtime_llm_tokens_total", **labels, kind="output") == 20
    assert value(metrics, "agent_runtime_llm_cost_usd_total", **labels) == pytest.approx(0.0015)
    assert value(metrics, "agent_runtime_llm_calls_total", **labels, cached="true") == 1


async def test_collector_reads_lag_pending_and_oldest_pending_age() -> None:
    redis = fakeredis.FakeAsyncRedis()
    stream = "p:inbox:echo"
    await redis.xgroup_create(stream, "echo", id="0", mkstream=True)
    old_ms = int(time.time() * 1000) - 60_000
    await redis.xadd(stream, {b"m": b"1"}, id=f"{old_ms}-0")
    for _ in range(4):
        await redis.xadd(stream, {b"m": b"x"})
    await redis.xreadgroup("echo", "c1", {stream: ">"}, count=2)  # 2 pending, 3 undelivered
    metrics = Metrics()
    await StreamCollector(RuntimeReader(redis), metrics, [stream]).collect()
    labels = {"stream": stream, "group": "echo"}
    assert value(metrics, "agent_runtime_pending_messages", **labels) == 2
    assert value(metrics, "agent_runtime_consumer_group_lag_messages", **labels) == 3
    assert value(metrics, "agent_runtime_oldest_pending_age_seconds", **labels) >= 59
    assert value(metrics, "agent_runtime_stream_length_messages", stream=stream) == 5
    await redis.aclose()


def test_usage_objects_of_the_llm_layer_are_accepted() -> None:
    from agent_runtime.llm.base import Usage

    metrics = Metrics()
    metrics.record_usage(
        Usage(provider="openai", model="gpt-x", input_tokens=7, output_tokens=3, cost_usd=0.01)
    )
    labels = {"provider": "openai", "model": "gpt-x"}
    assert value(metrics, "agent_runtime_llm_tokens_total", **labels, kind="output") == 3
    assert value(metrics, "agent_runtime_llm_cost_usd_total", **labels) == pytest.approx(0.01)
