"""``Client.publish_many``: a batch of requests queued in one round trip, each as ``publish``
would queue it (signed entry, ``published`` trace record, deadline entry), on a real server;
and the trace script sent by SHA survives a server that lost its scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from agent_runtime.client import Client, _published_record, published_record_bytes
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import PublishError, RequestError
from agent_runtime.transport.connect import connect
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
