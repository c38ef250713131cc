"""``Client.publish_many``: a batch of requests queued in one round trip, each as ``publish``
would queue it (signed entry, ``published`` trace record, deadline entry), on a real server;
and the trace script sent by SHA survives a server that lost its scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from agent_runtime.client import Client, _published_record, published_record_bytes
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import PublishError, RequestError, TransportError
from agent_runtime.transport.connect import connect
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.sweep import deadline_member
from protocols.core import UserRequest

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _pipeline(prefix: str) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": {"trace_ttl": 600},
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo"},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def test_a_batch_is_queued_in_order_each_request_as_publish_queues_it(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    keys = pipeline.config.keys
    client = Client(redis, pipeline)
    texts = ["first", "second", "third"]
    messages = await client.publish_many(texts, timeout=30)

    inbox = keys.inbox("echo")
    entries = await redis.xrange(inbox)
    decoded = [pipeline.codec().decode(fields, inbox).message for _id, fields in entries]
    assert [m.payload["text"] for m in decoded] == texts  # signed, verified, in order
    assert [m.message_id for m in decoded] == [m.message_id for m in messages]
    assert len({m.correlation_id for m in messages}) == 3
    for message in messages:
        cid = str(message.correlation_id)
        [raw] = await redis.lrange(keys.trace(cid), 0, -1)
        record = json.loads(raw)
        assert record["outcome"] == "published"
        assert record["message_id"] == str(message.message_id)
        assert 0 < await redis.ttl(keys.trace(cid)) <= 600
        assert message.deadline is not None and message.reply_to is not None
        score = await redis.zscore(keys.deadlines(), deadline_member(cid, message.reply_to))
        assert score == int(message.deadline.timestamp() * 1000)  # the sweep answers it


async def test_an_empty_text_refuses_the_whole_batch_before_anything_is_sent(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    with pytest.raises(RequestError, match="empty"):
        await Client(redis, pipeline).publish_many(["fine", "  "])
    assert await redis.exists(pipeline.config.keys.inbox("echo")) == 0


async def test_a_batch_whose_writes_fail_says_which_were_not_queued(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    await redis.set(pipeline.config.keys.inbox("echo"), b"not a stream")
    with pytest.raises(PublishError, match="2 of 2 requests not published") as caught:
        await Client(redis, pipeline).publish_many(["a", "b"])
    assert caught.value.published == []
    assert [m.payload["text"] for m in caught.value.failed] == ["a", "b"]


async def test_no_batch_and_no_shared_correlation_id(redis: Redis, prefix: str) -> None:
    client = Client(redis, _pipeline(prefix))
    assert await client.publish_many([]) == []
    with pytest.raises(TypeError, match="correlation id"):
        await client.publish_many(["a"], correlation_id=None)


async def test_the_trace_record_is_written_after_the_server_lost_its_scripts(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    client = Client(redis, pipeline)
    await client.publish("warm")  # the script is loaded by now
    await redis.script_flush()  # a restarted or flushed server: EVALSHA answers NOSCRIPT
    message = await client.publish("after the flush")
    records = await redis.lrange(pipeline.config.keys.trace(str(message.correlation_id)), 0, -1)
    assert [json.loads(r)["outcome"] for r in records] == ["published"]


async def test_the_formatted_published_record_is_the_json_of_the_record(
    redis: Redis, prefix: str
) -> None:
    client = Client(redis, _pipeline(prefix))
    message = client.new_message(UserRequest(text='a "quoted" ü'))
    fast = json.loads(published_record_bytes(message))
    slow = _published_record(message)
    for field in ("started_ms", "finished_ms"):
        assert abs(fast.pop(field) - slow.pop(field)) < 60_000
    assert fast == slow


async def test_a_batch_on_a_cluster_writes_every_trace_record(
    redis_cluster_url: str, prefix: str
) -> None:
    """The trace keys of a batch live in many slots: each record still gets written."""
    connection = connect(redis_cluster_url)
    try:
        pipeline = _pipeline(prefix)
        client = Client(connection.redis, pipeline)
        messages = await client.publish_many(["a", "b", "c", "d"])
        keys = pipeline.config.keys
        for message in messages:
            records = await connection.redis.lrange(keys.trace(str(message.correlation_id)), 0, -1)
            assert [json.loads(r)["outcome"] for r in records] == ["published"]
        assert await connection.redis.xlen(keys.inbox("echo")) == 4
    finally:
        await connection.redis.aclose()


def _sharded(prefix: str) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo", "shards": 2},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def test_a_batch_with_one_unwritable_inbox_queues_the_others_and_only_them(
    redis: Redis, prefix: str
) -> None:
    """One script call for the batch: a failed XADD is that request's alone, and a request
    that was not queued gets neither a trace record nor a deadline entry."""
    pipeline = _sharded(prefix)
    keys = pipeline.config.keys
    await redis.set(keys.inbox("echo", 1), b"not a stream")
    texts = [f"r{i}" for i in range(40)]  # both shards, but for 2**-39
    with pytest.raises(PublishError, match="were queued") as caught:
        await Client(redis, pipeline).publish_many(texts)
    published, failed = caught.value.published, caught.value.failed
    assert published and failed
    assert sorted(m.payload["text"] for m in published + failed) == sorted(texts)
    stream = keys.inbox("echo", 0)
    queued = [pipeline.codec().decode(f, stream).message for _, f in await redis.xrange(stream)]
    assert [m.message_id for m in queued] == [m.message_id for m in published]  # in order
    for message in published + failed:
        cid = str(message.correlation_id)
        assert message.reply_to is not None
        score = await redis.zscore(keys.deadlines(), deadline_member(cid, message.reply_to))
        traced = await redis.llen(keys.trace(cid))
        if message in published:
            assert pipeline.routing.stream_for("echo", message.correlation_id) == stream
            assert score is not None and traced == 1
        else:
            assert score is None and traced == 0


async def test_a_deadline_set_of_another_type_does_not_fail_the_batch(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    keys = pipeline.config.keys
    await redis.set(keys.deadlines(), b"not a sorted set")
    messages = await Client(redis, pipeline).publish_many(["a", "b"])  # logged, not raised
    assert await redis.xlen(keys.inbox("echo")) == 2
    for message in messages:
        assert await redis.llen(keys.trace(str(message.correlation_id))) == 1


async def test_a_large_batch_registers_every_deadline(redis: Redis, prefix: str) -> None:
    """The script adds deadline entries in chunks (Lua's unpack has a stack limit)."""
    pipeline = _pipeline(prefix)
    messages = await Client(redis, pipeline).publish_many(["x"] * 1_234)
    assert await redis.zcard(pipeline.config.keys.deadlines()) == len(messages) == 1_234
    assert await redis.xlen(pipeline.config.keys.inbox("echo")) == 1_234


async def test_a_server_out_of_memory_queues_none_of_a_batch(tmp_path: Path) -> None:
    """The script is refused as a whole: nothing half-queued, and publish names the OOM."""
    with EmbeddedServer(tmp_path, persistent=False) as server:
        redis = Redis.from_url(server.url)
        try:
            pipeline = _pipeline("oom")
            client = Client(redis, pipeline)
            await client.publish("before")  # the script is loaded
            await redis.config_set("maxmemory", 1)  # noeviction (the default): writes refused
            with pytest.raises(PublishError, match="2 of 2 requests not published") as caught:
                await client.publish_many(["a", "b"])
            assert caught.value.published == []
            with pytest.raises(TransportError, match="out of memory"):
                await client.publish("c")
            await redis.config_set("maxmemory", 0)
            assert await redis.xlen(pipeline.config.keys.inbox("echo")) == 1
        finally:
            await redis.aclose()


async def test_the_language_of_the_first_request_of_a_route_is_checked_every_time(
    redis: Redis, prefix: str
) -> None:
    """The lean path trusts a destination only after one envelope with it validated."""
    client = Client(redis, _pipeline(prefix))
    for _ in range(2):
        with pytest.raises(ValidationError):
            await client.publish("a", to="Not An Agent")
        with pytest.raises(ValidationError):
            await client.publish("a", budget_usd=-1.0)
        with pytest.raises(ValidationError):
            client.new_message(UserRequest(text="a"), now=datetime(2030, 1, 1))  # naive
    first = await client.publish("a", budget_usd=0.5)  # a budget: the validated path
    second = await client.publish("b")  # lean
    assert first.budget_usd == 0.5 and second.budget_usd is None
    assert await redis.xlen(client.keys.inbox("echo")) == 2
