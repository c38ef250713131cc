"""The operator tools' Redis commands (agent_runtime/transport/inspect.py, dlq.py, traces.py)
on the real embedded server: what ``status``, ``health``, ``trace`` and ``dlq`` read and change."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.inspect import HeartbeatProbe, RuntimeReader
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.traces import TraceLog

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_reader_scans_by_pattern_and_type(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.xadd(keys.inbox("echo"), {b"m": b"1"})
    await redis.xadd(keys.inbox("sink", 1), {b"m": b"1"})
    await redis.set(keys.inbox("not_a_stream"), b"x")
    reader = RuntimeReader(redis)
    assert await reader.scan(keys.inbox_pattern(), "stream") == sorted(
        [keys.inbox("echo"), keys.inbox("sink", 1)]
    )
    assert keys.inbox("not_a_stream") in await reader.scan(keys.inbox_pattern())
    assert await reader.exists(keys.inbox("echo"))
    assert not await reader.exists(keys.inbox("nobody"))


async def test_reader_reads_groups_pending_and_consumers(redis: Redis, prefix: str) -> None:
    stream = Keys(prefix).inbox("echo")
    await redis.xgroup_create(stream, "echo", id="0", mkstream=True)
    old_ms = int(time.time() * 1000) - 30_000
    await redis.xadd(stream, {b"m": b"old"}, id=f"{old_ms}-0")
    for _ in range(3):
        await redis.xadd(stream, {b"m": b"new"})
    await redis.xreadgroup("echo", "c1", {stream: ">"}, count=2)
    reader = RuntimeReader(redis)

    [group] = await reader.groups(stream)
    assert (group.name, group.pending, group.lag) == ("echo", 2, 2)
    assert await reader.oldest_pending(stream, "echo") == f"{old_ms}-0"
    [consumer] = await reader.consumers(stream, "echo")
    assert (consumer.name, consumer.pending) == ("c1", 2)
    assert consumer.idle_ms >= 0
    assert await reader.stream_length(stream) == 4


async def test_reader_reads_a_missing_stream_or_group_as_empty(redis: Redis, prefix: str) -> None:
    reader = RuntimeReader(redis)
    stream = Keys(prefix).inbox("nobody")
    assert await reader.groups(stream) == []
    assert await reader.consumers(stream, "nobody") == []
    assert await reader.stream_length(stream) == 0
    await redis.xadd(stream, {b"m": b"1"})
    assert await reader.groups(stream) == []  # a stream without groups
    assert await reader.consumers(stream, "nobody") == []


async def test_reader_reads_hashes_and_refuses_other_types(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.hset(keys.breaker("llm"), mapping={"state": "open", "failures": "3"})
    await redis.set(keys.breaker("stray"), b"not a hash")
    reader = RuntimeReader(redis)
    assert await reader.hash(keys.breaker("llm")) == {"failures": "3", "state": "open"}
    assert await reader.hash(keys.breaker("stray")) is None
    assert await reader.get(keys.breaker("stray")) == b"not a hash"
    assert await reader.get(keys.breaker("missing")) is None


async def test_dead_letters_are_found_read_newest_first_capped(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    store = DeadLetterStore(redis, keys)
    for n in range(5):
        await redis.xadd(keys.dlq("echo"), {b"reason": f"r{n}".encode()})
    await redis.xadd(keys.dlq("sink"), {b"reason": b"invalid"})
    await redis.set(keys.dlq("stray"), b"not a stream")
    assert await store.streams() == [keys.dlq("echo"), keys.dlq("sink")]
    assert await store.length(keys.dlq("echo")) == 5
    newest = await store.entries(keys.dlq("echo"), limit=2)
    assert [fields[b"reason"] for _, fields in newest] == [b"r3", b"r4"]  # oldest first
    assert newest[0][0] < newest[1][0]
    assert await store.entries(keys.dlq("nobody")) == []


async def test_republish_adds_to_the_inbox_deletes_the_letter_and_reopens(
    redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    store = DeadLetterStore(redis, keys)
    letter_id = (await redis.xadd(keys.dlq("echo"), {b"reason": b"x"})).decode()
    await redis.set(keys.outcome("cid-1"), b"failed")
    new_id = await store.republish(
        keys.dlq("echo"), letter_id, keys.inbox("echo"), {b"m": b"payload"}, reopen="cid-1"
    )
    [(entry_id, fields)] = await redis.xrange(keys.inbox("echo"))
    assert entry_id.decode() == new_id and fields == {b"m": b"payload"}
    assert await redis.xlen(keys.dlq("echo")) == 0
    assert not await redis.exists(keys.outcome("cid-1"))

    other = (await redis.xadd(keys.dlq("echo"), {b"reason": b"x"})).decode()
    await redis.set(keys.outcome("cid-2"), b"failed")
    await store.republish(keys.dlq("echo"), other, keys.inbox("echo"), {b"m": b"2"})
    assert await redis.exists(keys.outcome("cid-2"))  # no reopen asked: the guard stays


async def test_delete_removes_exactly_the_ids_given_in_batches(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    dlq = keys.dlq("echo")
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1203):
            pipe.xadd(dlq, {b"n": str(n).encode()})
        ids = [i.decode() for i in await pipe.execute()]
    store = DeadLetterStore(redis, keys)
    assert await store.delete(dlq, [*ids[:1201], "0-1"]) == 1201  # an unknown id: not counted
    assert [i.decode() for i, _ in await redis.xrange(dlq)] == ids[1201:]


async def test_trace_log_reads_records_from_an_index(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    records = [json.dumps({"n": n}).encode() for n in range(3)]
    await redis.rpush(keys.trace("cid"), *records)
    traces = TraceLog(redis, keys)
    assert await traces.records("cid") == records
    assert await traces.records("cid", 2) == records[2:]
    assert await traces.records("cid", 3) == []
    assert await traces.records("unknown") == []


def test_heartbeat_probe_sees_a_worker_while_its_key_exists(redis_url: str, prefix: str) -> None:
    keys = Keys(prefix)
    client = SyncRedis.from_url(redis_url)
    try:
        probe = HeartbeatProbe(client, keys)
        assert not probe.live("echo", "echo-host-0")
        client.set(keys.heartbeat("echo", "echo-host-0"), b"{}", ex=60)
        assert probe.live("echo", "echo-host-0")
        assert not probe.live("echo", "echo-host-1")
        client.delete(keys.heartbeat("echo", "echo-host-0"))
        assert not probe.live("echo", "echo-host-0")
    finally:
        client.close()
