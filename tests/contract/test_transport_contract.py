"""One transport contract, three backends: fakeredis and the real embedded server (with the
atomic commit script and with the portable two-round-trip commit used on Cluster).

Only behaviour fakeredis gets right is asserted here (no BLOCK waits, no cancellation, no
reclaim idle timing beyond a zero threshold); the timing-dependent behaviour is covered on the
real server by tests/e2e/test_delivery.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from agent_runtime.transport.streams import (
    Commit,
    DeadLetter,
    Handled,
    StreamBus,
    Write,
    original_fields,
)

pytestmark = pytest.mark.anyio

STREAM = "c:inbox:a"


ATOMIC: dict[int, bool] = {}  # id(redis client) -> commit with the script


@pytest.fixture(params=["fakeredis", "real", "real-portable"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "fakeredis":
        redis: Any = fakeredis.FakeAsyncRedis()  # no scripting: the portable commit
    else:
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
    ATOMIC[id(redis)] = request.param == "real"
    prefix = request.getfixturevalue("prefix")
    await redis.delete(STREAM)
    yield redis, prefix
    keys = [k async for k in redis.scan_iter(f"{prefix}*")] + [STREAM]
    await redis.delete(*keys)
    await redis.aclose()


def bus(redis: Any, prefix: str, consumer: str = "a-0") -> StreamBus:
    return StreamBus(
        redis,
        group="a",
        consumer=consumer,
        done_key=lambda b: f"{prefix}:done:a:{b}",
        done_ttl=3600,
        atomic=ATOMIC.get(id(redis), False),
        mark_prefix=f"{prefix}:commit:",
    )


async def seeded(redis: Any, prefix: str, n: int) -> tuple[StreamBus, list[bytes]]:
    b = bus(redis, prefix)
    await b.ensure_group(STREAM)
    await b.ensure_group(STREAM)  # idempotent
    ids = [await redis.xadd(STREAM, {b"m": f"msg{i}".encode()}) for i in range(n)]
    return b, ids


async def test_group_created_at_zero_sees_entries_written_before(client: Any) -> None:
    redis, prefix = client
    await redis.xadd(STREAM, {b"m": b"early"})
    b = bus(redis, prefix)
    await b.ensure_group(STREAM)
    [entry] = await b.read_new([STREAM], count=10, block_ms=1)
    assert entry.fields == {b"m": b"early"}
    assert entry.delivery_count == 1


async def test_commit_writes_outputs_done_ids_and_acks(client: Any) -> None:
    redis, prefix = client
    b, _ = await seeded(redis, prefix, 3)
    entries = await b.read_new([STREAM], count=10, block_ms=1)
    commit = Commit(
        handled=[
            Handled(entries[0], "id-1", [Write(f"{prefix}:out", {b"m": b"o1"})]),
            Handled(entries[1], "id-2", [Write(f"{prefix}:reply", {b"m": b"r"}, ttl=60)]),
            Handled(entries[2]),  # a duplicate: acked, not marked
        ]
    )
    assert await b.commit(commit) == []

    assert await redis.xlen(f"{prefix}:out") == 1
    assert 0 < await redis.ttl(f"{prefix}:reply") <= 60
    assert await b.already_done(["id-1", "id-2", "id-3"]) == [True, True, False]
    assert (await redis.xpending(STREAM, "a"))["pending"] == 0


async def test_dead_letter_keeps_original_fields_and_reason(client: Any) -> None:
    redis, prefix = client
    b, _ = await seeded(redis, prefix, 1)
    [entry] = await b.read_new([STREAM], count=10, block_ms=1)
    dlq = f"{prefix}:dlq:a"
    commit = Commit(dead=[DeadLetter(entry, dlq, "invalid", "payload: field required")])
    await b.commit(commit)

    [(_id, fields)] = await redis.xrange(dlq)
    assert fields[b"reason"] == b"invalid"
    assert fields[b"error"] == b"payload: field required"
    assert fields[b"stream"] == STREAM.encode()
    assert original_fields(fields) == {b"m": b"msg0"}
    assert (await redis.xpending(STREAM, "a"))["pending"] == 0


async def test_renew_does_not_count_but_redeliver_does(client: Any) -> None:
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 1)
    await b.read_new([STREAM], count=10, block_ms=1)
    await b.renew({STREAM: ids})
    [row] = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert row["times_delivered"] == 1
    [again] = await b.redeliver(STREAM, ids)
    assert again.delivery_count == 2
    assert again.fields == {b"m": b"msg0"}


async def test_restarted_consumer_rereads_its_own_pending_with_counts(client: Any) -> None:
    redis, prefix = client
    b, _ = await seeded(redis, prefix, 3)
    await b.read_new([STREAM], count=2, block_ms=1)
    restarted = bus(redis, prefix)  # same stable consumer name
    pending = await restarted.read_own_pending(STREAM, 100)
    assert [e.fields[b"m"] for e in pending] == [b"msg0", b"msg1"]
    assert [e.delivery_count for e in pending] == [2, 2]


async def test_reclaim_takes_entries_of_another_consumer_and_counts(client: Any) -> None:
    redis, prefix = client
    dead, _ = await seeded(redis, prefix, 3)
    await dead.read_new([STREAM], count=3, block_ms=1)
    other = bus(redis, prefix, consumer="a-1")
    claimed, deleted = await other.reclaim(STREAM, min_idle_ms=0, limit=10)
    assert sorted(e.fields[b"m"] for e in claimed) == [b"msg0", b"msg1", b"msg2"]
    assert {e.delivery_count for e in claimed} == {2}
    assert deleted == 0
    rows = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert {r["consumer"] for r in rows} == {b"a-1"}


async def test_safe_trim_never_drops_pending_or_undelivered(client: Any) -> None:
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 6)
    entries = await b.read_new([STREAM], count=4, block_ms=1)  # 4 delivered, 2 undelivered
    commit = Commit(handled=[Handled(e) for e in entries[:1] + entries[2:4]])  # [1] stays pending
    await b.commit(commit)

    await b.safe_trim(STREAM, retention_ms=0, approximate=False)  # the worker trims with ~
    remaining = [eid for eid, _ in await redis.xrange(STREAM)]
    assert ids[1] in remaining  # pending
    assert ids[4] in remaining and ids[5] in remaining  # never delivered
    assert ids[0] not in remaining  # acknowledged and older than every pending entry


async def test_hand_back_makes_entries_reclaimable_at_once(client: Any) -> None:
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 2)
    await b.read_new([STREAM], count=2, block_ms=1)
    await b.hand_back({STREAM: ids}, idle_ms=60_000)
    other = bus(redis, prefix, consumer="a-1")
    claimed, _ = await other.reclaim(STREAM, min_idle_ms=59_000, limit=10)
    assert len(claimed) == 2


async def test_forget_done(client: Any) -> None:
    redis, prefix = client
    b, _ = await seeded(redis, prefix, 1)
    [entry] = await b.read_new([STREAM], count=1, block_ms=1)
    await b.commit(Commit(handled=[Handled(entry, "x")]))
    assert await b.already_done(["x"]) == [True]
    await b.forget_done("x")
    assert await b.already_done(["x"]) == [False]


@pytest.fixture(params=["real", "real-portable"])
async def real(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    ATOMIC[id(redis)] = request.param == "real"
    prefix = request.getfixturevalue("prefix")
    await redis.delete(STREAM)
    yield redis, prefix
    await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}*")], STREAM)
    await redis.aclose()


async def test_terminal_reply_is_written_once_whoever_writes_it(real: Any) -> None:
    redis, prefix = real
    b, _ = await seeded(redis, prefix, 2)
    first, second = await b.read_new([STREAM], count=2, block_ms=1)
    reply, guard = f"{prefix}:reply:{{c1}}", f"{prefix}:req:{{c1}}:outcome"
    await b.commit(
        Commit(handled=[Handled(first, "m1", [Write(reply, {b"m": b"ok"}, 60, None, guard)])])
    )
    dead = DeadLetter(second, f"{prefix}:dlq:a", "expired", "late")
    dead.reply = Write(reply, {b"m": b"failed"}, 60, None, guard)
    await b.commit(Commit(dead=[dead]))

    assert [f for _, f in await redis.xrange(reply)] == [{b"m": b"ok"}]
    assert await redis.xlen(f"{prefix}:dlq:a") == 1  # the dead letter itself is kept
    assert (await redis.xpending(STREAM, "a"))["pending"] == 0


async def test_output_key_of_another_type_refuses_that_input_alone(real: Any) -> None:
    redis, prefix = real
    b, _ = await seeded(redis, prefix, 2)
    good, bad = await b.read_new([STREAM], count=2, block_ms=1)
    await redis.set(f"{prefix}:broken", "a string")
    commit = Commit(
        handled=[
            Handled(good, "m1", [Write(f"{prefix}:out", {b"m": b"o1"})]),
            Handled(bad, "m2", [Write(f"{prefix}:broken", {b"m": b"o2"})]),
        ]
    )
    [refused] = await b.commit(commit)
    if ATOMIC[id(redis)]:  # a replay of the same commit reports the same refusal
        [again] = await b.commit(commit)
        assert again.handled is refused.handled

    assert refused.handled.entry.entry_id == bad.entry_id
    assert "WRONGTYPE" in refused.error
    assert await redis.xlen(f"{prefix}:out") == 1
    assert await b.already_done(["m1", "m2"]) == [True, False]
    [row] = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert row["message_id"] == bad.entry_id  # left for the worker to dead-letter


async def test_replayed_commit_writes_nothing_twice(redis_url: str, prefix: str) -> None:
    """The server ran the commit but its reply was lost: the worker sends the same commit
    again. The atomic path refuses the replay (its token); a copy of an input already marked
    done (handled twice) writes no outputs either."""
    redis = Redis.from_url(redis_url)
    ATOMIC[id(redis)] = True
    try:
        b, _ = await seeded(redis, prefix, 2)
        first, second = await b.read_new([STREAM], count=2, block_ms=1)
        out = f"{prefix}:out"
        commit = Commit(handled=[Handled(first, "m1", [Write(out, {b"m": b"o1"})])])
        await b.commit(commit)
        await b.commit(commit)  # the same token: refused
        copy = Commit(handled=[Handled(second, "m1", [Write(out, {b"m": b"o1"})])])
        await b.commit(copy)  # another delivery of m1: acked, no output
        assert await redis.xlen(out) == 1
        assert (await redis.xpending(STREAM, "a"))["pending"] == 0
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}*")], STREAM)
        await redis.aclose()
