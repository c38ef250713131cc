"""The deadline sweep on a real server: a request past its deadline that nobody answered gets
exactly one ``request.failed`` (even with two sweeps and a success reply racing), an answered
one gets none, the lock is held and released only by its holder, a failing server never ends
the sweep loop, and every published request carries a deadline entered in the sweep's set."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import OutOfMemoryError, ResponseError

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.worker.sweep import DeadlineSweep, deadline_member
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage
from tests.fixtures.agents import EchoReply, echo_sink_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)

#: What a worker's commit does for a success reply: the same outcome guard (the lead's commit
#: script writes every terminal reply this way).
GUARDED_REPLY = """#!lua
if not redis.call('SET', KEYS[1], 'ok', 'NX', 'EX', 3600) then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV))
return 1
"""
END_OF_TIME = 2**62  # ms: every deadline is before it


@pytest.fixture
def pipeline(prefix: str) -> Pipeline:
    return echo_sink_pipeline(
        prefix, requests={"deadline": 42, "sweep_interval": 0.05, "sweep_batch": 7}
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


@pytest.fixture
def client(redis: Any, pipeline: Pipeline) -> Client:
    return Client(redis, pipeline)


def sweep(redis: Any, pipeline: Pipeline, owner: str = "a") -> DeadlineSweep:
    transport = RedisTransport.of(redis, keys=pipeline.config.keys)
    return DeadlineSweep(transport, pipeline, pipeline.codec(), owner=owner)


async def overdue(client: Client, count: int) -> list[AgentMessage]:
    """Requests whose deadline passed long ago (nobody consumes them here)."""
    return [await client.publish(f"request {i}", timeout=1, now=LONG_AGO) for i in range(count)]


async def replies(client: Client, message: AgentMessage) -> list[Any]:
    assert message.reply_to is not None
    entries = await client.redis.xrange(message.reply_to)
    return [client.codec.decode(fields, message.reply_to).payload for _, fields in entries]


async def drain(*sweeps: DeadlineSweep) -> None:
    """Run the sweeps concurrently until the deadline set is empty."""
    stop = asyncio.Event()
    async with anyio.create_task_group() as tg:
        for one in sweeps:
            tg.start_soon(one.run, stop)
        with anyio.fail_after(20):
            while await sweeps[0].deadlines.due(END_OF_TIME, 1):  # any member left
                await anyio.sleep(0.02)
        stop.set()


async def test_overdue_requests_get_one_request_failed_each_with_racing_sweeps(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    messages = await overdue(client, 20)
    first, second = sweep(redis, pipeline, "a"), sweep(redis, pipeline, "b")
    due = await redis.zrange(pipeline.config.keys.deadlines(), 0, -1)
    # both answer the same members at once (as if each held the lock), then both sweep on
    now_ms = int(time.time() * 1000)
    await asyncio.gather(first.answer(due[:10], now_ms), second.answer(due[:10], now_ms))
    await drain(first, second)
    assert first.answered + second.answered == 20
    for message in messages:
        (failed,) = await replies(client, message)
        assert isinstance(failed, RequestFailed)
        assert (failed.status, failed.code, failed.agent) == ("timeout", "no_consumer", "echo")
        assert failed.stage == "user.request"


async def test_a_success_reply_racing_the_sweep_leaves_one_reply(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    messages = await overdue(client, 30)
    keys, codec = pipeline.config.keys, client.codec

    async def reporter(message: AgentMessage) -> None:
        reply = message.derive(
            index=0,
            from_agent="sink",
            to_agent="client",
            message_type="test.reply",
            schema_version=1,
            payload=EchoReply(text="done").model_dump(mode="json"),
            now=datetime.now(UTC),
        )
        assert message.reply_to is not None
        encoded = codec.encode(reply, message.reply_to)
        fields = [item for pair in encoded.items() for item in pair]
        cid = str(message.correlation_id)
        await redis.eval(GUARDED_REPLY, 2, keys.outcome(cid), message.reply_to, *fields)

    sweeper = sweep(redis, pipeline)
    await asyncio.gather(drain(sweeper), *(reporter(m) for m in messages))
    kinds = [[type(r).__name__ for r in await replies(client, m)] for m in messages]
    assert all(len(k) == 1 for k in kinds), kinds
    assert sweeper.answered == sum(k == ["RequestFailed"] for k in kinds)


async def test_an_answered_request_gets_nothing_more(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    (message,) = await overdue(client, 1)
    await redis.set(pipeline.config.keys.outcome(str(message.correlation_id)), "ok")
    sweeper = sweep(redis, pipeline)
    await drain(sweeper)
    assert await replies(client, message) == []
    assert sweeper.answered == 0


async def test_a_live_worker_makes_it_expired_and_a_stopping_one_does_not(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    keys = pipeline.config.keys
    inbox, group = pipeline.routing.inboxes("echo")[0], keys.group("echo")
    await redis.xgroup_create(inbox, group, id="$", mkstream=True)
    (waiting,) = await overdue(client, 1)
    await redis.xreadgroup(group, "echo-1", {inbox: ">"}, count=1)  # joins the group
    beat = {"agent": "echo", "consumer": "echo-1", "stopping": False}
    await redis.set(keys.heartbeat("echo", "echo-1"), json.dumps(beat), ex=60)
    await drain(sweep(redis, pipeline))
    (failed,) = await replies(client, waiting)
    assert (failed.code, failed.agent, failed.stage) == ("expired", "echo", "user.request")

    (draining,) = await overdue(client, 1)
    await redis.set(keys.heartbeat("echo", "echo-1"), json.dumps({**beat, "stopping": True}))
    await drain(sweep(redis, pipeline))
    (failed,) = await replies(client, draining)
    assert (failed.code, failed.agent) == ("no_consumer", "echo")


async def test_the_lock_is_taken_per_round_and_released_only_by_its_holder(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    keys = pipeline.config.keys
    (message,) = await overdue(client, 1)
    await redis.set(keys.sweep_lock(), "another-process", px=60_000)
    sweeper = sweep(redis, pipeline)
    assert await sweeper.sweep_once() == 0  # the lock is held: nothing written
    await sweeper.release()  # not its lock: stays
    assert await redis.get(keys.sweep_lock()) == b"another-process"
    assert await replies(client, message) == []

    await redis.delete(keys.sweep_lock())
    assert await sweeper.sweep_once() == 1
    assert await redis.exists(keys.sweep_lock()) == 0  # released after the round
    (failed,) = await replies(client, message)
    assert isinstance(failed, RequestFailed)


async def test_a_round_is_bounded_and_a_full_batch_goes_on_at_once(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    await overdue(client, 10)  # sweep_batch is 7
    sweeper = sweep(redis, pipeline)
    assert await sweeper.sweep_once() == 7
    assert await sweeper.sweep_once() == 3
    assert sweeper.answered == 10


async def test_members_not_written_by_the_runtime_are_dropped_unanswered(
    pipeline: Pipeline, redis: Any
) -> None:
    keys = pipeline.config.keys
    other = keys.inbox("sink")
    junk = {"not a member": 1, deadline_member("0f0e2ab4-0000-4000-8000-000000000000", other): 1}
    await redis.zadd(keys.deadlines(), junk)
    await drain(sweep(redis, pipeline))
    assert await redis.exists(other) == 0


async def test_the_loop_survives_a_server_it_cannot_reach(
    pipeline: Pipeline, tmp_path: Any
) -> None:
    dead = connect(f"unix://{tmp_path}/nothing.sock").redis
    sweeper = sweep(dead, pipeline)
    failures: list[str] = []
    sweeper.log = type("Log", (), {"warning": lambda _self, event, **kw: failures.append(event)})()
    stop = asyncio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sweeper.run, stop)
        with anyio.fail_after(20):
            while len(failures) < 3:
                await anyio.sleep(0.02)
        stop.set()
    assert set(failures) == {"deadline_sweep_failed"}
    await dead.aclose()


async def test_every_published_request_has_a_deadline_in_the_sweeps_set(
    client: Client, pipeline: Pipeline, redis: Any
) -> None:
    before = (await client.clock.now()) * 1000
    message = await client.publish("no timeout given")
    after = (await client.clock.now()) * 1000
    assert message.deadline is not None and message.reply_to is not None
    member = deadline_member(str(message.correlation_id), message.reply_to)
    score = await redis.zscore(pipeline.config.keys.deadlines(), member)
    assert score == int(message.deadline.timestamp() * 1000)
    assert int(before) + 42_000 <= score <= after + 42_000  # requests.deadline: 42
    # a later deadline of the same request (an approval decision) extends it, never shortens
    later = client.new_message(
        EchoReply(text="x"),
        to="sink",
        correlation_id=message.correlation_id,
        timeout=1,
        now=datetime.now(UTC) + timedelta(hours=1),
    )
    await client.send(later)
    earlier = client.new_message(
        EchoReply(text="x"), to="sink", correlation_id=message.correlation_id, timeout=1
    )
    await client.send(earlier)
    assert later.deadline is not None
    expected = int(later.deadline.timestamp() * 1000)
    assert await redis.zscore(pipeline.config.keys.deadlines(), member) == expected


async def test_on_a_cluster_each_request_is_answered_on_its_own_slot(
    redis_cluster_url: str, pipeline: Pipeline
) -> None:
    cluster = connect(redis_cluster_url).redis
    try:
        client = Client(cluster, pipeline)
        messages = await overdue(client, 12)  # correlation ids spread over the slots
        first, second = sweep(cluster, pipeline, "a"), sweep(cluster, pipeline, "b")
        await drain(first, second)
        for message in messages:
            (failed,) = await replies(client, message)
            assert (failed.code, failed.agent) == ("no_consumer", "echo")
    finally:
        await cluster.aclose()


async def test_out_of_memory_leaves_requests_for_a_later_round(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    with EmbeddedServer(tmp_path, persistent=False, extra_args=("--maxmemory", "4mb")) as server:
        redis = connect(server.url).redis
        client = Client(redis, pipeline)
        messages = await overdue(client, 3)
        due = await redis.zrange(pipeline.config.keys.deadlines(), 0, -1)
        with pytest.raises(ResponseError):  # fill memory up to the limit
            for i in range(10_000):
                await redis.set(f"filler:{i}", b"x" * 4096)

        sweeper = sweep(redis, pipeline)
        assert await sweeper.answer(due, int(time.time() * 1000)) == 0  # every script refused
        with pytest.raises(OutOfMemoryError):
            await sweeper.sweep_once()  # nor can the lock be taken
        assert await redis.zcard(pipeline.config.keys.deadlines()) == 3
        assert [await replies(client, m) for m in messages] == [[], [], []]

        await redis.delete(*[f"filler:{i}" for i in range(10_000)])  # memory back
        await drain(sweeper)
        assert [len(await replies(client, m)) for m in messages] == [1, 1, 1]
        await redis.aclose()
