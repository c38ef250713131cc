"""The /metrics endpoint of real worker processes exposes correct counter values."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime.testing import wait_until
from tests.fixtures.pipeline import LivePipeline, MakePipeline, echo_sink

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, frozenset(labels.items())))


def start_with_metrics(p: LivePipeline, agent: str) -> int:
    port = free_port()
    p.start(agent, AGENT_RUNTIME_METRICS_PORT=str(port), AGENT_RUNTIME_METRICS_INTERVAL="0.2")
    return port


def test_counters_histogram_gauges_after_n_messages(make_pipeline: MakePipeline) -> None:
    p = make_pipeline()
    echo_port = start_with_metrics(p, "echo")
    sink_port = start_with_metrics(p, "sink")
    messages = [p.publish(f"m{i}") for i in range(5)]
    wait_until(lambda: all(p.replies(m) for m in messages), 30, message="5 replies")
    # the same envelope again: the worker drops it as a duplicate
    p.r.xadd(p.keys.inbox("echo"), p.codec.encode(messages[0], p.keys.inbox("echo")))

    echo = {"agent": "echo", "message_type": "user.request"}
    wait_until(
        lambda: sample(echo_port, "agent_runtime_duplicates_dropped_total", agent="echo") == 1,
        message="duplicate counted",
    )
    assert sample(echo_port, "agent_runtime_messages_handled_total", **echo) == 5
    assert sample(echo_port, "agent_runtime_handle_duration_seconds_count", **echo) == 5
    assert (
        sample(
            sink_port,
            "agent_runtime_messages_handled_total",
            agent="sink",
            message_type="test.echoed",
        )
        == 5
    )
    assert (
        sample(
            echo_port,
            "agent_runtime_messages_handled_total",
            agent="sink",
            message_type="test.echoed",
        )
        is None
    )  # each process counts its own agent
    assert sample(echo_port, "agent_runtime_in_flight_messages", agent="echo") == 0
    group = {"stream": p.keys.inbox("echo"), "group": "echo"}
    # the duplicate is counted when it is dropped and acknowledged by the next commit: wait
    # for the acknowledgement, then for a collector round that has seen all six entries acked
    wait_until(lambda: not p.pending("echo"), message="the duplicate acknowledged")
    wait_until(
        lambda: (
            sample(echo_port, "agent_runtime_stream_length_messages", stream=p.keys.inbox("echo"))
            == 6
            and sample(echo_port, "agent_runtime_pending_messages", **group) == 0
        ),
        message="collector round after the acknowledgement",
    )
    assert sample(echo_port, "agent_runtime_consumer_group_lag_messages", **group) == 0
    assert sample(echo_port, "agent_runtime_pending_messages", **group) == 0
    assert sample(echo_port, "agent_runtime_oldest_pending_age_seconds", **group) == 0


def test_failures_and_dead_letters_are_counted(make_pipeline: MakePipeline) -> None:
    p = make_pipeline(echo_sink({"fail_always": True}))
    port = start_with_metrics(p, "echo")
    for text in ("a", "b", "c"):
        p.publish(text)
    p.r.xadd(p.keys.inbox("echo"), p.codec.sign_fields({b"m": b"not json"}, p.keys.inbox("echo")))
    labels = {"agent": "echo", "message_type": "user.request"}
    wait_until(
        lambda: (
            sample(
                port,
                "agent_runtime_messages_dead_lettered_total",
                **labels,
                reason="max_deliveries",
            )
            == 3
        ),
        30,
        message="3 dead letters",
    )
    # max_deliveries is 2: every poison message failed twice
    assert sample(port, "agent_runtime_messages_failed_total", **labels, error="RuntimeError") == 6
    assert (
        sample(
            port,
            "agent_runtime_messages_dead_lettered_total",
            agent="echo",
            message_type="unknown",
            reason="undecodable",
        )
        == 1
    )
    assert sample(port, "agent_runtime_messages_handled_total", **labels) is None
    assert p.r.xlen(p.keys.dlq("echo")) == 4


def free_port_range(count: int) -> int:
    """A base port with ``count`` free consecutive ports after it (checked by binding)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        try:
            for offset in range(count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range")


def test_up_gives_every_worker_its_own_metrics_port(make_pipeline: MakePipeline) -> None:
    import anyio

    from agent_runtime.client import Client

    agents = echo_sink()
    agents["echo"]["replicas"] = 2
    p = make_pipeline(agents)
    redis_url = p.url
    base = free_port_range(3)

    async def run() -> dict[tuple[str, int], int | None]:
        sup = p.supervisor(env={"AGENT_RUNTIME_METRICS_PORT": str(base)})
        async with sup:
            await sup.wait_ready(60)
            ports = {(w.agent, w.slot): sup.metrics_port(w.agent, w.slot) for w in sup.processes()}
            async with Client.connect(redis_url, p.pipeline) as client:
                for i in range(6):
                    await client.request(f"r{i}", timeout=30)
            handled = {
                key: await anyio.to_thread.run_sync(_handled, port, key[0])
                for key, port in ports.items()
            }
            return handled

    handled = anyio.run(run)
    assert sorted(handled) == [("echo", 0), ("echo", 1), ("sink", 0)]
    assert handled[("echo", 0)] + handled[("echo", 1)] == 6  # type: ignore[operator]
    assert handled[("sink", 0)] == 6


def _handled(port: int | None, agent: str) -> int:
    assert port is not None
    types = {"echo": "user.request", "sink": "test.echoed"}
    return int(
        sample(port, "agent_runtime_messages_handled_total", agent=agent, message_type=types[agent])
        or 0
    )
