"""One transport contract, four backends: the in-memory transport
(agent_runtime/transport/memory.py), fakeredis, and the real embedded server (with the atomic
commit script and with the portable two-round-trip commit used on Cluster).

Each backend is a client (the real server's, fakeredis's, or the in-memory transport's
Redis-shaped one) and the bus made for it (:func:`bus`). Behaviour fakeredis does not get
right (BLOCK waits, the outcome guard, WRONGTYPE refusals) is asserted on the real server and
the memory transport only; the timing-dependent behaviour of whole workers is covered on the
real server by tests/e2e/test_delivery.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import fakeredis
import pytest
from redis.asyncio import Redis

from agent_runtime.transport.memory import ManualClock, MemoryBus, MemoryRedis
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


def backend(name: str, request: pytest.FixtureRequest) -> Any:
    """The client of backend ``name``."""
    if name == "memory":
        return MemoryRedis(clock=ManualClock())  # time moves only when a test moves it
    if name == "fakeredis":
        return fakeredis.FakeAsyncRedis()  # no scripting: the portable commit
    return Redis.from_url(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["memory", "fakeredis", "real", "real-portable"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    redis = backend(request.param, request)
    ATOMIC[id(redis)] = request.param == "real"
    prefix = request.getfixturevalue("prefix")
    await redis.delete(STREAM)
    yield redis, prefix
    keys = [k async for k in redis.scan_iter(f"{prefix}*")] + [STREAM]
    await redis.delete(*keys)
    await redis.aclose()


def bus(redis: Any, prefix: str, consumer: str = "a-0") -> StreamBus:
    """The bus of ``redis``'s backend: a MemoryBus on the memory transport."""
    cls = MemoryBus if isinstance(redis, MemoryRedis) else StreamBus
    return cls(
        redis,
        group="a",
        consumer=consumer,
        done_key=lambda b: f"{prefix}:done:a:{b}",
        done_ttl=3600,
        atomic=ATOMIC.get(id(redis), False),
        mark_prefix=f"{prefix}:commit:",
    )


def advance(redis: Any, seconds: float) -> None:
    """Move the memory transport's clock on (the real server's moves by itself)."""
    if isinstance(redis, MemoryRedis):
        assert isinstance(redis.store.clock, ManualClock)
        redis.store.clock.advance(seconds)


async def past(redis: Any, entry_id: bytes) -> None:
    """Until the trimming clock is past the millisecond of ``entry_id`` (a retention of 0 ms
    trims only entries older than now): the memory store's clock is moved; StreamBus trims by
    this host's clock, which is awaited (entries and trim in one millisecond keep them all)."""
    if isinstance(redis, MemoryRedis):
        advance(redis, 0.001)
        return
    with anyio.fail_after(10):
        while int(time.time() * 1000) <= int(entry_id.split(b"-")[0]):
            await anyio.sleep(0.001)


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
    await past(redis, ids[-1])  # every entry is older than "now - 0 ms"

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


@pytest.fixture(params=["memory", "real", "real-portable"])
async def real(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The backends that keep the outcome guard and refuse a key of another type."""
    redis = backend(request.param, request)
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
    if ATOMIC[id(redis)] or isinstance(redis, MemoryRedis):  # a replay: the same refusal
        [again] = await b.commit(commit)
        assert again.handled is refused.handled

    assert refused.handled.entry.entry_id == bad.entry_id
    assert "WRONGTYPE" in refused.error
    assert await redis.xlen(f"{prefix}:out") == 1
    assert await b.already_done(["m1", "m2"]) == [True, False]
    [row] = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert row["message_id"] == bad.entry_id  # left for the worker to dead-letter


@pytest.mark.parametrize("name", ["memory", "real"])
async def test_replayed_commit_writes_nothing_twice(
    name: str, request: pytest.FixtureRequest, prefix: str
) -> None:
    """The server ran the commit but its reply was lost: the worker sends the same commit
    again. The atomic path refuses the replay (its token); a copy of an input already marked
    done (handled twice) writes no outputs either."""
    redis = backend(name, request)
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


@pytest.mark.parametrize("name", ["memory", "real"])
async def test_one_commit_with_two_copies_and_many_inputs_writes_each_once(
    name: str, request: pytest.FixtureRequest, prefix: str
) -> None:
    """The atomic commit checks all its inputs' done marks at once and acks per inbox: two
    copies of one message in one commit write one output; every input is acked and marked;
    a copy already marked before the commit writes nothing."""
    redis = backend(name, request)
    ATOMIC[id(redis)] = True
    try:
        b, _ = await seeded(redis, prefix, 5)
        entries = await b.read_new([STREAM], count=5, block_ms=1)
        out = f"{prefix}:out"
        await b.commit(Commit(handled=[Handled(entries[0], "m0", [])]))  # m0 marked before
        ids = ["m1", "m1", "m2", "m0"]
        commit = Commit(
            handled=[
                Handled(e, i, [Write(out, {b"m": i.encode()})])
                for e, i in zip(entries[1:], ids, strict=True)
            ]
        )
        assert await b.commit(commit) == []
        assert [f[b"m"] for _, f in await redis.xrange(out)] == [b"m1", b"m2"]
        assert await b.already_done(["m0", "m1", "m2"]) == [True, True, True]
        assert (await redis.xpending(STREAM, "a"))["pending"] == 0
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}*")], STREAM)
        await redis.aclose()


# ---------------------------------------------------------------------------------------------
# The cases the memory transport needs to be trusted, on every backend that can show them.


async def test_fresh_entries_are_not_reclaimed_and_renew_resets_idle(client: Any) -> None:
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 2)
    await b.read_new([STREAM], count=2, block_ms=1)
    other = bus(redis, prefix, consumer="a-1")
    assert (await other.reclaim(STREAM, min_idle_ms=60_000, limit=10))[0] == []
    await b.hand_back({STREAM: ids}, idle_ms=120_000)  # idle for two minutes...
    await b.renew({STREAM: ids[:1]})  # ...except the first, renewed by a live handler
    claimed, _ = await other.reclaim(STREAM, min_idle_ms=60_000, limit=10)
    assert [e.entry_id for e in claimed] == ids[1:]
    assert await b.own_pending(STREAM, min_idle_ms=60_000, count=10) == []


async def test_delivery_count_rises_with_each_redelivery_and_reclaim(client: Any) -> None:
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 1)
    [first] = await b.read_new([STREAM], count=1, block_ms=1)
    assert first.delivery_count == 1
    assert [e.delivery_count for e in await b.redeliver(STREAM, ids)] == [2]
    assert [e.delivery_count for e in await b.redeliver(STREAM, ids)] == [3]
    other = bus(redis, prefix, consumer="a-1")
    [claimed] = (await other.reclaim(STREAM, min_idle_ms=0, limit=10))[0]
    assert claimed.delivery_count == 4
    [row] = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert row["times_delivered"] == 4 and row["consumer"] == b"a-1"


async def test_a_done_mark_is_seen_by_every_consumer_of_the_group(client: Any) -> None:
    redis, prefix = client
    b, _ = await seeded(redis, prefix, 1)
    [entry] = await b.read_new([STREAM], count=1, block_ms=1)
    await b.commit(Commit(handled=[Handled(entry, "m1", [Write(f"{prefix}:out", {b"m": b"o"})])]))
    other = bus(redis, prefix, consumer="a-1")
    assert await other.already_done(["m1", "m2"]) == [True, False]


@pytest.mark.parametrize("name", ["memory", "real"])
async def test_blocked_read_wakes_up_on_publish(
    name: str, request: pytest.FixtureRequest, prefix: str
) -> None:
    """A read BLOCKed on an empty stream returns the entry published meanwhile (before its
    block time is up: the fail_after only keeps a broken backend from hanging the suite)."""
    redis = backend(name, request)
    try:
        b = bus(redis, prefix)
        await b.ensure_group(STREAM)
        assert await b.read_new([STREAM], count=10, block_ms=1) == []
        got: list[Any] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def reader() -> None:
                    got.extend(await b.read_new([STREAM], count=10, block_ms=60_000))

                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                await redis.xadd(STREAM, {b"m": b"late"})
        assert [e.fields for e in got] == [{b"m": b"late"}]
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}*")], STREAM)
        await redis.aclose()


async def test_one_commit_with_two_terminal_replies_writes_the_first(real: Any) -> None:
    redis, prefix = real
    b, _ = await seeded(redis, prefix, 2)
    first, second = await b.read_new([STREAM], count=2, block_ms=1)
    reply, guard = f"{prefix}:reply:{{c2}}", f"{prefix}:req:{{c2}}:outcome"
    commit = Commit(
        handled=[
            Handled(first, "m1", [Write(reply, {b"m": b"one"}, 60, None, guard)]),
            Handled(second, "m2", [Write(reply, {b"m": b"two"}, 60, None, guard)]),
        ]
    )
    assert await b.commit(commit) == []
    assert [f for _, f in await redis.xrange(reply)] == [{b"m": b"one"}]
    assert await redis.get(guard) == b"m1"
    assert (await redis.xpending(STREAM, "a"))["pending"] == 0


async def test_memory_reclaim_by_idle_time_follows_its_clock() -> None:
    """The memory transport's idle times are its clock's: entries become reclaimable (and
    orphans claimable) once the clock has moved past the threshold."""
    clock = ManualClock()
    redis = MemoryRedis(clock=clock)
    b, ids = await seeded(redis, "p", 2)
    await b.read_new([STREAM], count=2, block_ms=1)
    other = bus(redis, "p", consumer="a-1")
    clock.advance(59)
    assert (await other.reclaim(STREAM, min_idle_ms=60_000, limit=10))[0] == []
    assert await b.own_pending(STREAM, min_idle_ms=60_000, count=10) == []
    clock.advance(1)
    assert await b.own_pending(STREAM, min_idle_ms=60_000, count=10) == ids
    [claimed] = await b.claim(STREAM, ids[:1], min_idle_ms=60_000)
    assert claimed.delivery_count == 2
    rest, deleted = await other.reclaim(STREAM, min_idle_ms=60_000, limit=10)
    assert [e.entry_id for e in rest] == ids[1:] and deleted == 0


async def test_memory_keys_expire_with_its_clock() -> None:
    clock = ManualClock()
    redis = MemoryRedis(clock=clock)
    b, _ = await seeded(redis, "p", 1)
    [entry] = await b.read_new([STREAM], count=1, block_ms=1)
    await b.commit(Commit(handled=[Handled(entry, "m1", [Write("p:r", {b"m": b"r"}, ttl=60)])]))
    clock.advance(59)
    assert await redis.xlen("p:r") == 1
    clock.advance(1)
    assert await redis.xlen("p:r") == 0 and await redis.ttl("p:r") == -2


async def _idle_past(redis: Any, consumer: str, ms: int) -> None:
    """Until ``consumer`` has been idle for ``ms`` (the memory clock is moved on)."""
    if isinstance(redis, MemoryRedis):
        advance(redis, ms / 1000)
        return
    with anyio.fail_after(10):
        while True:
            rows = await redis.xinfo_consumers(STREAM, "a")
            if any(r["name"] == consumer.encode() and r["idle"] >= ms for r in rows):
                return
            await anyio.sleep(0.01)


async def test_idle_consumers_owning_nothing_are_removed_never_one_with_pending(
    real: Any,
) -> None:
    redis, prefix = real
    me, _ = await seeded(redis, prefix, 3)
    gone, holder = bus(redis, prefix, consumer="gone"), bus(redis, prefix, consumer="holder")
    [entry] = await gone.read_new([STREAM], count=1, block_ms=1)
    await gone.commit(Commit(handled=[Handled(entry, "m0")]))  # acked: owns nothing
    [held] = await holder.read_new([STREAM], count=1, block_ms=1)  # owns a pending entry
    await me.read_new([STREAM], count=1, block_ms=1)  # the caller itself is never removed
    assert await me.remove_idle_consumers(STREAM, 60_000) == [], "not idle long enough"
    await _idle_past(redis, "gone", 50)
    await _idle_past(redis, "holder", 50)

    assert await me.remove_idle_consumers(STREAM, 50) == ["gone"]
    rows = await redis.xinfo_consumers(STREAM, "a")
    assert {r["name"] for r in rows} == {b"a-0", b"holder"}
    pending = await redis.xpending_range(STREAM, "a", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending if p["consumer"] == b"holder"] == [
        (held.entry_id, b"holder")
    ], "the entry of the consumer with pending work is still reclaimable"
    assert await me.remove_idle_consumers(STREAM, 50) == [], "idempotent"
    assert await me.remove_idle_consumers("c:no-such-stream", 0) == []


async def test_read_checked_checks_the_given_ids_and_reads_on_without_waiting(
    client: Any,
) -> None:
    """The worker's folded read (StreamBus.read_checked): the done marks of the previous
    batch's ids and the next batch, in one call; nothing waits when nothing is there."""
    redis, prefix = client
    b, ids = await seeded(redis, prefix, 3)
    [first] = await b.read_new([STREAM], count=1, block_ms=1)
    assert await b.commit(Commit(handled=[Handled(first, "id-1")])) == []

    entries, done = await b.read_checked([STREAM], 1, ["id-1", "id-2"])
    assert done == [True, False]
    assert [e.entry_id for e in entries] == [ids[1]]
    assert entries[0].delivery_count == 1

    entries, done = await b.read_checked([STREAM], 0, ["id-1"])  # capacity full: check only
    assert (entries, done) == ([], [True])
    entries, done = await b.read_checked([STREAM], 5, [])
    assert ([e.entry_id for e in entries], done) == ([ids[2]], [])
    with anyio.fail_after(5):  # an empty inbox answers at once (no BLOCK)
        assert await b.read_checked([STREAM], 5, []) == ([], [])
    pending = await redis.xpending(STREAM, "a")
    assert pending["pending"] == 2  # read entries are pending until acked
