"""The default ``concurrency`` fits I/O-bound agents: one worker process with default settings
keeps far more than a few dozen handlers waiting on I/O at once (issue 17: it was 32, which
capped an LLM-bound agent at about 300 calls/s per process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agent_runtime import Agent, MessageContext
from agent_runtime.client import Client
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.transport.connect import connect
from agent_runtime.worker.build import build_worker
from protocols.core import UserRequest

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WAITING: set[str] = set()  # correlation ids whose handler is awaiting the gate
GATE: list[anyio.Event] = []


class AwaitsIO(Agent[BaseModel]):
    """Every handler waits on one gate: an LLM call that has not answered yet."""

    consumes = (UserRequest,)

    async def handle(self, ctx: MessageContext) -> None:
        WAITING.add(str(ctx.message.correlation_id))
        await GATE[0].wait()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


def test_the_default_concurrency_is_sized_for_io_bound_agents() -> None:
    assert WorkerSettings().concurrency == 512


async def test_one_worker_with_default_settings_keeps_hundreds_of_handlers_waiting(
    redis: Any, prefix: str
) -> None:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.integration.test_default_concurrency"],
            "agents": {"io": {"class": "tests.integration.test_default_concurrency:AwaitsIO"}},
        }
    )
    pipeline = Pipeline.build(config)
    assert pipeline.worker_settings("io").concurrency == 512  # nothing set in the config
    WAITING.clear()
    GATE[:] = [anyio.Event()]
    messages = await Client(redis, pipeline).publish_many([f"call {i}" for i in range(300)])
    worker = build_worker(pipeline, "io", redis, consumer="io-0").worker
    inbox = pipeline.config.keys.inbox("io")
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(60):
            while len(WAITING) < len(messages):  # all 300 in flight at once, none finished
                await anyio.sleep(0.02)
        GATE[0].set()
        with anyio.fail_after(60):
            while (await redis.xpending(inbox, "io"))["pending"]:
                await anyio.sleep(0.02)
        worker.stop()
    assert WAITING == {str(m.correlation_id) for m in messages}
    groups = await redis.xinfo_groups(inbox)
    assert groups[0]["entries-read"] == 300
