"""A router whose local clock is an hour off still expires an approval when the Redis server's
clock reaches it: the approval timer is a schedule entry scored in server time and swept on
the server's clock (``TIME``), never compared with the process clock. The router worker runs
in-process (to inject the skewed clock) against the real embedded server; the steps' outcome
goes to the reporter's inbox, whose entry id is the server's time of the rejection."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

import agent_runtime.agent
import agent_runtime.worker.dead_letters
import agent_runtime.worker.loop
import protocols.envelope
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.worker.build import build_worker
from protocols.envelope import AgentMessage
from protocols.pipeline import Plan, PlanStep, RequestInfo, SafetyVerdict
from tests.fixtures.pipeline import six_agents

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(60)]

REAL_UTCNOW = protocols.envelope.utcnow
REAL_TIME = time.time
TTL = 3.0  # seconds from the verdict to the approval's expiry (server clock)


def skew_local_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """Every local wall-clock reading of this process (the router included) is ``offset``
    off."""

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


@pytest.fixture
def pipeline(prefix: str, tmp_path: Path) -> Pipeline:
    data = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "agents": six_agents(tmp_path),
        "worker": {"block_ms": 100, "heartbeat_interval": 0.5, "drain_timeout": 1},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return Pipeline.load(path)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


async def server_now(redis: Any) -> datetime:
    seconds, micros = await redis.time()
    return datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)


def verdict(pipeline: Pipeline, expires_at: datetime) -> AgentMessage:
    cid = uuid.uuid4()
    plan = Plan(
        request=RequestInfo(text="deploy web to prod", requested_at=REAL_UTCNOW()),
        steps=[PlanStep(id="s1", tool="deploy", args={"service": "web"}, risk="high")],
        cost_estimate_usd=0.0,
    )
    payload = SafetyVerdict(
        decision="needs_approval",
        plan=plan,
        awaiting_approval=["s1"],
        approval_expires_at=expires_at,
    )
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=cid,
        from_agent="safety_checker",
        to_agent="router",
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        payload=payload.model_dump(mode="json"),
        timestamp=REAL_UTCNOW(),
        deadline=REAL_UTCNOW() + timedelta(minutes=5),
        reply_to=pipeline.config.keys.reply(str(cid)),
    )


async def expire_with_skew(
    pipeline: Pipeline, redis: Any, monkeypatch: pytest.MonkeyPatch, offset: timedelta
) -> tuple[datetime, int, dict[str, Any]]:
    """Run a router whose clock is ``offset`` off on a plan waiting for approval: (the
    expiry, the server time in ms of the router's ``plan.finished``, its payload)."""
    keys = pipeline.config.keys
    expires = await server_now(redis) + timedelta(seconds=TTL)
    message = verdict(pipeline, expires)
    inbox = keys.inbox("router")
    await redis.xadd(inbox, pipeline.codec().encode(message, inbox))
    skew_local_clock(monkeypatch, offset)
    worker = build_worker(pipeline, "router", redis, consumer="router-skewed-0").worker
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(30):  # an hour early or late would never get here
            while not await redis.xlen(keys.inbox("reporter")):
                await anyio.sleep(0.05)
        worker.stop()
    monkeypatch.undo()
    [(entry_id, fields)] = await redis.xrange(keys.inbox("reporter"))
    assert await redis.xpending(keys.inbox("router"), "router") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    at_ms = int(entry_id.split(b"-")[0])
    return expires, at_ms, json.loads(fields[b"m"])["payload"]


@pytest.mark.parametrize(
    "offset", [timedelta(hours=1), timedelta(hours=-1)], ids=["ahead", "behind"]
)
async def test_approval_expires_on_the_server_clock_whatever_the_router_clock(
    pipeline: Pipeline, redis: Any, monkeypatch: pytest.MonkeyPatch, offset: timedelta
) -> None:
    expires, at_ms, outcome = await expire_with_skew(pipeline, redis, monkeypatch, offset)
    assert outcome["status"] == "rejected"
    assert outcome["statuses"] == {"s1": "rejected"}
    assert any("expired" in reason for reason in outcome["reasons"])
    # never before the expiry on the server's clock (a router an hour ahead would have
    # expired it at once) ...
    assert at_ms >= int(expires.timestamp() * 1000)
    # ... and it did fire (a router an hour behind would have waited an hour: fail_after)
