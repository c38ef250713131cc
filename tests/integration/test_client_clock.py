"""A client whose local clock is an hour off still sets request deadlines on the Redis server's
clock (the clock workers check them against): its requests neither expire at once nor live an
hour too long. Real embedded server; a worker in-process handles the request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import agent_runtime.client
import protocols.envelope
from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.worker.build import build_worker
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


def skew_client_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    def skewed() -> datetime:
        return REAL_UTCNOW() + offset

    monkeypatch.setattr(agent_runtime.client, "utcnow", skewed)
    monkeypatch.setattr(protocols.envelope, "utcnow", skewed)
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + offset.total_seconds())


async def server_now(redis: Any) -> datetime:
    seconds, micros = await redis.time()
    return datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)


@pytest.mark.parametrize("offset", [timedelta(hours=1), timedelta(hours=-1)])
async def test_deadlines_follow_the_server_clock_not_a_skewed_client_clock(
    pipeline: Pipeline, redis: Any, monkeypatch: pytest.MonkeyPatch, offset: timedelta
) -> None:
    client = Client(redis, pipeline)
    skew_client_clock(monkeypatch, offset)
    before = await server_now(redis)
    message = await client.publish("hello", timeout=30)
    after = await server_now(redis)
    assert message.deadline is not None
    assert before + timedelta(seconds=30) <= message.deadline <= after + timedelta(seconds=30)
    monkeypatch.undo()  # the worker runs on the right clock

    worker = build_worker(pipeline, "echo", redis, consumer="echo-clock-0").worker
    keys = pipeline.config.keys
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while not (await redis.xlen(keys.inbox("sink")) or await redis.xlen(keys.dlq("echo"))):
                await anyio.sleep(0.02)
        worker.stop()
    assert await redis.xlen(keys.dlq("echo")) == 0  # handled, not expired
    assert await redis.xlen(keys.inbox("sink")) == 1
