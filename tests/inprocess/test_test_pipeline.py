"""TestPipeline: whole pipelines in one process on the in-memory transport -- the built-in
six agents, the text_stats plug-in example, and a failing agent's request.failed reply."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from agent_runtime.approval import waiting_approvals
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import TestPipeline
from agent_runtime.transport.memory import ManualClock
from protocols.pipeline import Report

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]


async def test_default_six_agent_pipeline_answers_with_a_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # the executor's sandbox is "." (the repository root)
    async with TestPipeline(ROOT / "configs" / "default.yaml") as tp:
        assert set(tp.workers) == {
            "intent_parser",
            "planner",
            "safety_checker",
            "router",
            "executor",
            "reporter",
        }
        reply = await tp.request("list files in configs and read configs/policy.yaml", timeout=20)
        assert isinstance(reply.payload, Report)
        report = reply.payload
        assert report.status == "succeeded", report.reasons
        outputs = {s.id: s.output for s in report.steps}
        assert "policy.yaml" in [e["name"] for e in outputs["s1"]]
        assert outputs["s2"] == (ROOT / "configs" / "policy.yaml").read_text()
        trace = await tp.trace(str(reply.message.correlation_id))
        handled = [r["agent"] for r in trace if r["outcome"] == "handled"]
        for agent in ("intent_parser", "planner", "safety_checker", "router", "executor"):
            assert agent in handled
        assert trace[0]["outcome"] == "published"
        assert await tp.dead_letters() == []


async def test_text_stats_example_runs_in_process() -> None:
    async with TestPipeline(ROOT / "configs" / "examples" / "text_stats.yaml") as tp:
        reply = await tp.request("Redis streams carry messages. Workers read redis streams.")
    assert reply.message.message_type == "text_stats.summary"
    assert reply.message.from_agent == "summarizer"
    assert reply.payload.model_dump(mode="json") == {
        "summary": "8 words (6 unique), 2 sentence(s), 57 characters; most frequent: "
        "redis (2), streams (2), carry (1); reading time about 3 s",
        "words": 8,
        "sentences": 2,
        "top_words": ["redis", "streams", "carry"],
        "reading_seconds": 3,
    }


def failing_pipeline() -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": "tp",
            "allowed_modules": ["tests.fixtures"],
            "agents": {
                "echo": {
                    "class": "tests.fixtures.agents:Echo",
                    "config": {"invalid_when_text_contains": "bad port"},
                },
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def test_a_failing_agent_yields_a_request_failed_reply_with_the_reason() -> None:
    async with TestPipeline(failing_pipeline()) as tp:
        good = await tp.request("hello")
        failed = await tp.request("bad port 70000")
        letters = await tp.dead_letters("echo")
    assert good.message.message_type == "test.reply"
    assert good.payload.model_dump()["text"] == "HELLO"
    assert failed.message.message_type == "request.failed"
    body = failed.payload.model_dump()
    assert (body["status"], body["code"], body["agent"]) == ("failed", "permanent_error", "echo")
    assert "Port out of range 0-65535: bad port 70000" in body["reason"]
    [letter] = letters  # the dead letter the reply names, with the same reason
    assert letter["reason"] == "permanent_error"
    assert letter["dead_letter_id"] == body["dead_letter_id"]
    assert letter["correlation_id"] == str(failed.message.correlation_id)


def echo_pipeline(worker: dict[str, object] | None = None, **echo: object) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": "tp",
            "allowed_modules": ["tests.fixtures"],
            "requests": {"sweep_interval": 0.05},
            "worker": worker or {},
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo", "config": echo},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def test_a_request_past_its_deadline_ends_with_a_timeout_reply() -> None:
    """The handler outlives the request's deadline: the requester still gets exactly one
    reply, the runtime's request.failed with status timeout."""
    async with TestPipeline(echo_pipeline(sleep_seconds=30)) as tp:
        message = await tp.publish("slow", timeout=0.3)
        reply = await tp.wait_reply(message, timeout=10)
        replies = await tp.redis.xlen(message.reply_to or "")
    assert reply.message.message_type == "request.failed"
    assert reply.payload.model_dump()["status"] == "timeout"
    assert replies == 1


async def test_a_failing_handler_is_retried_with_a_rising_delivery_count() -> None:
    """A transient failure (RuntimeError) is redelivered until max_deliveries, then
    dead-lettered: the dead letter records the last delivery count."""
    pipeline = echo_pipeline(
        {"max_deliveries": 3, "retry_backoff": 0.01}, fail_when_text_contains="poison"
    )
    async with TestPipeline(pipeline) as tp:
        reply = await tp.request("poison pill")
        [letter] = await tp.dead_letters("echo")
    assert reply.message.message_type == "request.failed"
    assert letter["reason"] == "max_deliveries"
    assert letter["delivery_count"] == "3"


async def test_the_client_reply_reader_works_on_the_memory_transport() -> None:
    """``tp.client`` is a real Client: its own reply reader (the polling lane, on the
    Redis-shaped client) gets the answer too."""
    async with TestPipeline(echo_pipeline()) as tp:
        reply = await tp.client.request("via the client", timeout=10)
    assert reply.message.message_type == "test.reply"
    assert reply.payload.model_dump()["text"] == "VIA THE CLIENT"


async def test_an_approval_expires_through_the_schedule_on_the_store_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-memory transport runs the router's approval timer like Redis does: listed while
    it waits, nothing pending meanwhile, fired when the store's clock passes the expiry."""
    monkeypatch.chdir(ROOT)
    clock = ManualClock(time.time())
    async with TestPipeline(ROOT / "configs" / "default.yaml", clock=clock) as tp:
        message = await tp.publish("deploy web to prod", timeout=3600)
        cid = str(message.correlation_id)
        with anyio.fail_after(20):
            while not [s for s in await waiting_approvals(tp.client) if s.correlation_id == cid]:
                await anyio.sleep(0.02)
        inbox = tp.keys.inbox("router")
        # the router lists the approval while handling; its ack follows with the commit
        with anyio.fail_after(20):
            while (await tp.redis.xpending(inbox, "router"))["pending"]:
                await anyio.sleep(0.02)
        clock.advance(700)  # past approval_ttl (600 s in configs/policy.yaml)
        reply = await tp.wait_reply(message, 20)
        assert isinstance(reply.payload, Report)
        assert reply.payload.status == "rejected"
        assert any("expired" in reason for reason in reply.payload.reasons)
        assert await waiting_approvals(tp.client) == []
