"""``agent-runtime status`` and ``health``: streams, groups, consumers, workers, breakers."""

from __future__ import annotations

import pytest

from agent_runtime.testing import wait_until
from tests.fixtures.pipeline import LivePipeline, MakePipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def echo_pipeline(make_pipeline: MakePipeline) -> LivePipeline:
    return make_pipeline()


def test_status_shows_streams_lag_pending_consumers_breakers_and_workers(
    echo_pipeline: LivePipeline,
) -> None:
    p = echo_pipeline
    p.start("echo")
    message = p.publish("hello")  # no sink yet: its inbox holds one undelivered message
    wait_until(lambda: p.r.xlen(p.keys.inbox("sink")) == 1, 20, message="echo output")
    p.r.xgroup_create(p.keys.inbox("sink"), "sink", id="0", mkstream=True)
    p.r.hset(p.keys.breaker("llm.openai"), mapping={"state": "open", "failures": "5"})

    status = p.cli_json("status")
    streams = {s["stream"]: s for s in status["streams"]}
    echo = streams[p.keys.inbox("echo")]
    assert echo["length"] == 1
    [group] = echo["groups"]
    assert (group["group"], group["pending"], group["lag"]) == ("echo", 0, 0)
    assert [c["consumer"] for c in group["consumers"]] == [p.consumer("echo")]
    [sink] = streams[p.keys.inbox("sink")]["groups"]
    assert (sink["pending"], sink["lag"]) == (0, 1)
    assert status["breakers"] == {"llm.openai": {"failures": "5", "state": "open"}}
    [worker] = status["workers"]
    assert (worker["agent"], worker["consumer"], worker["processed"] >= 0) == (
        "echo",
        p.consumer("echo"),
        True,
    )
    assert status["dead_letters"] == []

    code, text = p.cli("status")
    assert code == 0
    for expected in (
        p.keys.inbox("sink"),
        p.consumer("echo"),
        "llm.openai: open",
        "Workers (1 live)",
    ):
        assert expected in text
    assert message.reply_to is not None


def test_health_fails_until_every_agent_type_has_a_live_worker(echo_pipeline: LivePipeline) -> None:
    p = echo_pipeline
    p.start("echo")
    code, text = p.cli("health")
    assert code == 1 and "no live worker for sink" in text
    p.start("sink")
    result = p.cli_json("health")
    assert result["ok"] and result["missing_agents"] == []
    assert {w["agent"] for w in result["workers"]} == {"echo", "sink"}
    code, text = p.cli("health", "--agent", "sink", "--consumer", p.consumer("sink"))
    assert code == 0 and "is live" in text
    p.stop("sink")  # a stopped worker deletes its heartbeat
    code, text = p.cli("health", "--agent", "sink", "--consumer", p.consumer("sink"))
    assert code == 1 and "UNHEALTHY" in text
