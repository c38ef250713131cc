"""The transport on a real local 3-master Redis Cluster: every operation the worker and the
client use works across hash slots (no CROSSSLOT), sharded inboxes spread over the masters,
and a request's keys share one slot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from agent_runtime.client import Client
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport import Commit, DeadLetter, StreamBus, connect
from agent_runtime.transport.breaker_scripts import RedisBreakers
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import Handled, Write

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SHARDS = 3


@pytest.fixture
async def cluster_redis(redis_cluster_url: str) -> AsyncIterator[Any]:
    connection = connect(redis_cluster_url)
    assert connection.cluster and isinstance(connection.redis, RedisCluster)
    await connection.redis.initialize()
    yield connection.redis
    await connection.redis.aclose()


@pytest.fixture
def streams(prefix: str) -> list[str]:
    return Keys(prefix).inboxes("agent", SHARDS)


async def _bus(redis: Any, streams: list[str], consumer: str = "c1") -> StreamBus:
    keys = Keys(streams[0].split(":", 1)[0])  # the test's own prefix
    bus = StreamBus(
        redis,
        group="agent",
        consumer=consumer,
        cluster=True,
        done_key=lambda bucket: keys.done("agent", bucket),
    )
    for stream in streams:
        await bus.ensure_group(stream)
    return bus


async def test_sharded_inboxes_live_on_different_masters(cluster_redis: Any, prefix: str) -> None:
    # Shard names carry no hash tag, so CRC16 spreads them; with the random test prefix and
    # only SHARDS names all of them could hash to one master now and then. Sixteen shards over
    # three masters all on one: about 1 in 14 million.
    streams = Keys(prefix).inboxes("agent", 16)
    nodes = {cluster_redis.get_node_from_key(s).name for s in streams}
    assert len(nodes) >= 2, "shards of one inbox should spread over the cluster's masters"


async def test_request_keys_share_one_slot(prefix: str) -> None:
    from redis.crc import key_slot

    keys = Keys(prefix)
    cid = str(uuid.uuid4())
    slots = {
        key_slot(k.encode())
        for k in (
            keys.reply(cid),
            keys.trace(cid),
            keys.request_state(cid, "plan"),
            keys.request_state(cid, "cost"),
        )
    }
    assert len(slots) == 1


async def test_read_new_covers_every_shard_and_respects_count(
    cluster_redis: Any, streams: list[str]
) -> None:
    bus = await _bus(cluster_redis, streams)
    for n, stream in enumerate(streams):
        for i in range(2):
            await cluster_redis.xadd(stream, {b"m": f"{n}-{i}".encode()})
    first = await bus.read_new(streams, count=4, block_ms=100)
    assert len(first) == 4
    rest = await bus.read_new(streams, count=10, block_ms=100)
    got = sorted(e.fields[b"m"] for e in first + rest)
    assert got == sorted(f"{n}-{i}".encode() for n in range(SHARDS) for i in range(2))
    assert await bus.read_new(streams, count=10, block_ms=50) == []


async def test_commit_writes_and_acks_across_slots(
    cluster_redis: Any, streams: list[str], prefix: str
) -> None:
    keys = Keys(prefix)
    bus = await _bus(cluster_redis, streams)
    for stream in streams:
        await cluster_redis.xadd(stream, {b"m": b"in"})
    entries = await bus.read_new(streams, count=10, block_ms=100)
    assert len(entries) == SHARDS
    cid = str(uuid.uuid4())
    done = [str(uuid.uuid4()) for _ in entries]
    commit = Commit(
        handled=[
            Handled(entries[0], done[0], [Write(keys.inbox("next", 1), {b"m": b"out"})]),
            Handled(
                entries[1],
                done[1],
                [Write(keys.reply(cid), {b"m": b"reply"}, 60, None, keys.outcome(cid))],
            ),
        ],
        dead=[DeadLetter(entries[2], keys.dlq("agent"), "poison", "boom")],
    )
    assert await bus.commit(commit) == []

    assert await bus.already_done(done) == [True, True, False]
    assert await cluster_redis.xlen(keys.inbox("next", 1)) == 1
    assert 0 < await cluster_redis.ttl(keys.reply(cid)) <= 60
    assert await cluster_redis.xlen(keys.dlq("agent")) == 1
    for stream in streams:
        assert (await cluster_redis.xpending(stream, "agent"))["pending"] == 0


async def test_lease_hand_back_and_reclaim_across_shards(
    cluster_redis: Any, streams: list[str]
) -> None:
    owner = await _bus(cluster_redis, streams, consumer="owner")
    thief = await _bus(cluster_redis, streams, consumer="thief")
    for stream in streams:
        await cluster_redis.xadd(stream, {b"m": b"work"})
    held = await owner.read_new(streams, count=10, block_ms=100)
    leases: dict[str, list[bytes]] = {}
    for entry in held:
        leases.setdefault(entry.stream, []).append(entry.entry_id)
    await owner.renew(leases)
    for stream in streams:  # renewed leases are fresh: nothing to steal
        assert (await thief.reclaim(stream, min_idle_ms=60_000, limit=10))[0] == []
    await owner.hand_back(leases, idle_ms=60_000)
    stolen = []
    for stream in streams:
        entries, deleted = await thief.reclaim(stream, min_idle_ms=60_000, limit=10)
        stolen += entries
        assert deleted == 0
    assert sorted(e.entry_id for e in stolen) == sorted(e.entry_id for e in held)
    assert all(e.delivery_count == 2 for e in stolen)


async def test_own_pending_and_redeliver_count_deliveries(
    cluster_redis: Any, streams: list[str]
) -> None:
    bus = await _bus(cluster_redis, streams)
    await cluster_redis.xadd(streams[1], {b"m": b"x"})
    (entry,) = await bus.read_new(streams, count=10, block_ms=100)
    (again,) = await bus.read_own_pending(entry.stream, count=10)
    assert again.entry_id == entry.entry_id and again.delivery_count == 2
    (third,) = await bus.redeliver(entry.stream, [entry.entry_id])
    assert third.delivery_count == 3


async def test_safe_trim_keeps_pending_entries(cluster_redis: Any, streams: list[str]) -> None:
    bus = await _bus(cluster_redis, streams)
    stream = streams[2]
    for i in range(5):
        await cluster_redis.xadd(stream, {b"m": str(i).encode()})
    entries = await bus.read_new([stream], count=5, block_ms=100)
    await cluster_redis.xack(stream, "agent", *[e.entry_id for e in entries[:3]])
    await bus.safe_trim(stream, retention_ms=0)
    remaining = {eid for eid, _ in await cluster_redis.xrange(stream)}
    assert {e.entry_id for e in entries[3:]} <= remaining


def _pipeline(prefix: str) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo", "shards": SHARDS},
                "sink": {"class": "tests.fixtures.agents:Sink", "shards": SHARDS},
            },
        }
    )
    return Pipeline.build(config)


async def test_client_publishes_to_shards_and_reads_reply(cluster_redis: Any, prefix: str) -> None:
    pipeline = _pipeline(prefix)
    keys = pipeline.config.keys
    client = Client(cluster_redis, pipeline)
    sent = [await client.publish(f"hello {i}") for i in range(12)]
    for message in sent:  # one request always lands in its own shard (by correlation id)
        stream = pipeline.routing.stream_for("echo", message.correlation_id)
        bodies = [f[b"m"] for _id, f in await cluster_redis.xrange(stream)]
        assert sum(str(message.message_id).encode() in b for b in bodies) == 1
        assert await cluster_redis.llen(keys.trace(str(message.correlation_id))) == 1
    used = {pipeline.routing.stream_for("echo", m.correlation_id) for m in sent}
    assert len(used) >= 2
    reply = sent[0].model_copy(
        update={
            "message_id": uuid.uuid4(),
            "message_type": "test.reply",
            "from_agent": "sink",
            "to_agent": "client",
            "payload": {"text": "HELLO 0"},
        }
    )
    assert sent[0].reply_to is not None
    await cluster_redis.xadd(sent[0].reply_to, client.codec.encode(reply, sent[0].reply_to))
    decoded = await client.wait_reply(sent[0], timeout=5)
    assert decoded.payload.model_dump() == {"text": "HELLO 0"}


async def test_failed_output_write_leaves_input_pending_and_not_done(
    cluster_redis: Any, streams: list[str], prefix: str
) -> None:
    """Cluster pipelines run nodes concurrently: an XACK must still never beat a failed (or
    unfinished) output write on another node."""
    keys = Keys(prefix)
    bus = await _bus(cluster_redis, streams)
    inbox = streams[0]
    await cluster_redis.xadd(inbox, {b"m": b"in"})
    (entry,) = await bus.read_new([inbox], count=1, block_ms=100)
    inbox_node = cluster_redis.get_node_from_key(inbox).name
    broken = next(
        k
        for k in (keys.inbox("next", n) for n in range(64))
        if cluster_redis.get_node_from_key(k).name != inbox_node
    )
    await cluster_redis.set(broken, b"not a stream")  # XADD to it fails with WRONGTYPE
    message_id = str(uuid.uuid4())
    commit = Commit([Handled(entry, message_id, [Write(broken, {b"m": b"out"})])])
    [refused] = await bus.commit(commit)  # that input alone is refused, left pending
    assert "WRONGTYPE" in refused.error
    assert (await cluster_redis.xpending(inbox, "agent"))["pending"] == 1
    assert await bus.already_done([message_id]) == [False]


async def test_trace_records_are_lists_and_never_fail_the_commit(
    cluster_redis: Any, streams: list[str], prefix: str
) -> None:
    """On Cluster, trace records are plain RPUSH + EXPIRE in the writes pipeline; a trace key
    of another type loses its record, and the commit still writes, marks and acks."""
    keys = Keys(prefix)
    bus = await _bus(cluster_redis, streams)
    for stream in streams:
        await cluster_redis.xadd(stream, {b"m": b"in"})
    entries = await bus.read_new(streams, count=10, block_ms=100)
    cids = [str(uuid.uuid4()) for _ in range(3)]
    broken, good, other = (keys.trace(cid) for cid in cids)
    await cluster_redis.set(broken, b"not a list")  # RPUSH to it fails with WRONGTYPE
    done = [str(uuid.uuid4()) for _ in entries]
    handled = [Handled(e, d) for e, d in zip(entries, done, strict=True)]
    handled[0].writes.append(Write(keys.inbox("next", 1), {b"m": b"out"}))
    commit = Commit(
        handled,
        traces=[(good, b'{"n":1}'), (broken, b'{"n":2}'), (other, b'{"n":3}'), (good, b"4")],
        trace_ttl=300,
    )
    await bus.commit(commit)  # does not raise

    assert await bus.already_done(done) == [True] * len(done)
    assert await cluster_redis.xlen(keys.inbox("next", 1)) == 1
    for stream in streams:
        assert (await cluster_redis.xpending(stream, "agent"))["pending"] == 0
    assert await cluster_redis.type(good) == b"list"
    assert await cluster_redis.lrange(good, 0, -1) == [b'{"n":1}', b"4"]
    assert await cluster_redis.lrange(other, 0, -1) == [b'{"n":3}']
    assert 0 < await cluster_redis.ttl(good) <= 300
    assert await cluster_redis.get(broken) == b"not a list"


async def test_shared_breaker_lua_runs_on_the_cluster(redis_cluster_url: str, prefix: str) -> None:
    """The breaker's Lua scripts touch one key each: they run on Redis Cluster, and failures
    from two clients open it for both."""
    from agent_runtime.errors import BreakerOpen
    from agent_runtime.policies import BreakerPolicy, SharedBreaker, error_matcher

    spec = BreakerPolicy.model_validate({"fail_max": 2, "reset_timeout": 30})
    clients = [connect(redis_cluster_url).redis for _ in range(2)]
    try:
        breakers = [
            SharedBreaker(
                "dep", spec, RedisBreakers(c), Keys(prefix), counts=error_matcher(spec.failure_on)
            )
            for c in clients
        ]

        async def fail() -> None:
            raise ConnectionError("dependency down")

        for breaker in breakers:
            with pytest.raises(ConnectionError):
                await breaker.call(fail)
        for breaker in breakers:
            with pytest.raises(BreakerOpen):
                await breaker.call(fail)
    finally:
        for client in clients:
            await client.aclose()


async def test_idle_consumers_are_removed_on_every_shard(
    cluster_redis: Any, streams: list[str]
) -> None:
    """The removal script names one key (the shard): it runs on whichever master holds it."""
    me = await _bus(cluster_redis, streams)
    gone = await _bus(cluster_redis, streams, consumer="gone")
    for stream in streams:
        await cluster_redis.xadd(stream, {b"m": b"x"})
        await cluster_redis.xgroup_createconsumer(stream, "agent", "empty")
    entries = await gone.read_new(streams, count=len(streams), block_ms=1)
    assert {e.stream for e in entries} == set(streams)  # "gone" holds one entry per shard
    for stream in streams:
        assert await me.remove_idle_consumers(stream, 0) == ["empty"], stream
        rows = await cluster_redis.xinfo_consumers(stream, "agent")
        assert {r["name"] for r in rows} == {b"gone"}, "pending entries keep their consumer"
