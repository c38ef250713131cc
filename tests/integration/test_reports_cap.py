"""The reporter caps the shared reports stream (XADD MAXLEN ~) while every request still gets
its report on its own reply stream. A real reporter worker (in-process) on the embedded
server; MAXLEN ~ trims whole stream nodes, so the length is checked against the cap plus one
node (100 entries by default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from agent_runtime.client import Client
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.worker.build import build_worker
from protocols.envelope import utcnow
from protocols.pipeline import Outcome, RequestInfo

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
CAP, REPORTS, NODE = 10, 300, 100


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


def pipeline(prefix: str) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "worker": {
                "block_ms": 100,
                "heartbeat_interval": 0.5,
                "drain_timeout": 1,
                "batch_size": 50,
                "concurrency": 50,
            },
            "agents": {  # the six agents; only the reporter runs here
                "intent_parser": {"class": "agents.intent_parser:IntentParser"},
                "planner": {"class": "agents.planner:Planner"},
                "safety_checker": {"class": "agents.safety_checker:SafetyChecker"},
                "router": {"class": "agents.router:Router"},
                "executor": {"class": "agents.executor:Executor"},
                "reporter": {
                    "class": "agents.reporter:Reporter",
                    "config": {"reports_maxlen": CAP},
                },
            },
        }
    )
    return Pipeline.build(config)


async def test_the_reports_stream_is_capped(redis: Any, prefix: str) -> None:
    p = pipeline(prefix)
    keys = p.config.keys
    client = Client(redis, p)
    messages = []
    for i in range(REPORTS):
        outcome = Outcome(
            status="succeeded", request=RequestInfo(text=f"r{i}", requested_at=utcnow())
        )
        message = client.new_message(outcome)
        await client.send(message)
        messages.append(message)
    worker = build_worker(p, "reporter", redis, consumer="reporter-cap-0").worker
    last = messages[-1].reply_to
    assert last is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(30):
            while not await redis.xlen(last):
                await anyio.sleep(0.05)
        worker.stop()
    for message in messages:  # every requester got its report
        assert message.reply_to is not None and await redis.xlen(message.reply_to) == 1
    length = await redis.xlen(keys.reports())
    assert CAP <= length <= CAP + NODE < REPORTS
    [(_id, newest)] = await redis.xrevrange(keys.reports(), count=1)
    assert b'"request":"r%d"' % (REPORTS - 1) in newest[b"m"]
