"""A worker whose local clock is an hour off neither expires valid messages nor handles
expired ones: expiry on receipt compares the deadline with the Redis server's clock.
The worker runs in-process (to inject the skewed clock) against the real embedded server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

import agent_runtime.agent
import agent_runtime.worker.dead_letters
import agent_runtime.worker.loop
import protocols.envelope
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.worker.build import build_worker
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.agents import echo_sink_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REAL_UTCNOW = protocols.envelope.utcnow
REAL_TIME = time.time


@pytest.fixture
def pipeline(prefix: str) -> Pipeline:
    return echo_sink_pipeline(
        prefix, worker={"block_ms": 100, "heartbeat_interval": 0.5, "drain_timeout": 1}
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


def skew_local_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """Every local wall-clock reading the runtime makes is ``offset`` off."""

    def skewed() -> datetime:
        return REAL_UTCNOW() + offset

    for module in (
        protocols.envelope,
        agent_runtime.agent,
        agent_runtime.worker.dead_letters,
        agent_runtime.worker.loop,
    ):
        monkeypatch.setattr(module, "utcnow", skewed, raising=False)
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + offset.total_seconds())


def request(pipeline: Pipeline, deadline: datetime) -> AgentMessage:
    cid = uuid.uuid4()
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=cid,
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload=UserRequest(text="hello").model_dump(mode="json"),
        timestamp=REAL_UTCNOW(),
        deadline=deadline,
        reply_to=pipeline.config.keys.reply(str(cid)),
    )


async def run_worker_until(pipeline: Pipeline, redis: Any, done: Callable[[], Any]) -> None:
    worker = build_worker(pipeline, "echo", redis, consumer="echo-test-0").worker
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while not await done():
                await anyio.sleep(0.02)
        worker.stop()


async def test_clock_ahead_does_not_expire_a_valid_message(
    pipeline: Pipeline, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = pipeline.config.keys
    message = request(pipeline, deadline=utcnow() + timedelta(seconds=30))
    await redis.xadd(keys.inbox("echo"), pipeline.codec().encode(message, keys.inbox("echo")))
    skew_local_clock(monkeypatch, timedelta(hours=1))  # this worker thinks it is 1 h later

    async def handled() -> bool:
        return bool(await redis.xlen(keys.inbox("sink")) or await redis.xlen(keys.dlq("echo")))

    await run_worker_until(pipeline, redis, handled)
    assert await redis.xlen(keys.dlq("echo")) == 0
    [(_id, fields)] = await redis.xrange(keys.inbox("sink"))
    assert json.loads(fields[b"m"])["causation_id"] == str(message.message_id)


async def test_clock_behind_does_not_handle_an_expired_message(
    pipeline: Pipeline, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = pipeline.config.keys
    message = request(pipeline, deadline=utcnow() - timedelta(seconds=2))
    await redis.xadd(keys.inbox("echo"), pipeline.codec().encode(message, keys.inbox("echo")))
    skew_local_clock(monkeypatch, timedelta(hours=-1))  # this worker thinks it is 1 h earlier

    async def dead_lettered() -> bool:
        return bool(await redis.xlen(keys.dlq("echo")) or await redis.xlen(keys.inbox("sink")))

    await run_worker_until(pipeline, redis, dead_lettered)
    assert await redis.xlen(keys.inbox("sink")) == 0
    [(_id, dead)] = await redis.xrange(keys.dlq("echo"))
    assert dead[b"reason"] == b"expired"
    assert message.reply_to is not None
    [(_id, reply)] = await redis.xrange(message.reply_to)
    payload = json.loads(reply[b"m"])["payload"]
    assert payload["status"] == "timeout" and payload["agent"] == "echo"
