"""The schedule (agent_runtime/transport/base.py ``Schedule``) on the real embedded server and
on the in-memory transport: add is idempotent, only due members are claimed, a claimed member
is leased (no second sweeper gets it until the lease ends: no double fire), settle removes it
only while it holds that lease, and a member claimed by a sweeper that died (never settled)
is due again when the lease ends (crash-safe)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio import Redis

from agent_runtime.transport.base import Schedule
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.transport.schedule import RedisSchedule

pytestmark = pytest.mark.anyio
AGENT = "router"


@pytest.fixture(params=["redis", "memory"])
async def schedules(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[tuple[Schedule, Schedule]]:
    """Two clients of one store (two sweeping processes, in real life)."""
    keys = Keys(prefix)
    if request.param == "memory":
        memory = MemoryTransport(keys=keys)
        yield memory.schedule, MemoryTransport.on(memory.store, keys).schedule
        return
    url = request.getfixturevalue("redis_url")
    clients = [Redis.from_url(url), Redis.from_url(url)]
    yield RedisSchedule(clients[0], keys), RedisSchedule(clients[1], keys)
    await clients[0].delete(keys.schedule(AGENT))
    for client in clients:
        await client.aclose()


async def test_only_due_members_are_claimed_and_add_is_idempotent(
    schedules: tuple[Schedule, Schedule],
) -> None:
    one, _ = schedules
    await one.add(AGENT, b"early", 1_000)
    await one.add(AGENT, b"late", 5_000)
    await one.add(AGENT, b"early", 9_000)  # NX: a redelivered add changes nothing
    assert await one.claim(AGENT, 2_000, 32_000, 10) == [b"early"]
    assert await one.members(AGENT, 10) == [(b"late", 5_000.0), (b"early", 32_000.0)]


async def test_a_claimed_member_is_not_claimed_again_until_its_lease_ends(
    schedules: tuple[Schedule, Schedule],
) -> None:
    one, two = schedules
    for n in range(20):
        await one.add(AGENT, f"m{n}".encode(), 1_000 + n)
    claimed: list[list[bytes]] = []

    async def sweep(schedule: Schedule) -> None:
        claimed.append(await schedule.claim(AGENT, 2_000, 32_000, 100))

    async with anyio.create_task_group() as tg:
        for schedule in (one, two, one, two):
            tg.start_soon(sweep, schedule)
    every = [m for batch in claimed for m in batch]
    assert sorted(every) == sorted(f"m{n}".encode() for n in range(20))  # each exactly once
    assert await two.claim(AGENT, 31_999, 62_000, 100) == []  # leased
    again = await two.claim(AGENT, 32_000, 62_000, 100)  # the first sweeper died: due again
    assert sorted(again) == sorted(every)


async def test_settle_removes_a_member_only_while_it_holds_that_lease(
    schedules: tuple[Schedule, Schedule],
) -> None:
    one, two = schedules
    await one.add(AGENT, b"timer", 1_000)
    assert await one.claim(AGENT, 2_000, 32_000, 10) == [b"timer"]
    assert await two.claim(AGENT, 32_000, 62_000, 10) == [b"timer"]  # lease ended: taken over
    assert not await one.settle(AGENT, b"timer", 32_000)  # the old lease: not removed
    assert await two.settle(AGENT, b"timer", 62_000)
    assert await one.members(AGENT, 10) == []
    await one.add(AGENT, b"gone", 1_000)
    await one.remove(AGENT, b"gone")
    assert await one.claim(AGENT, 2_000, 32_000, 10) == []
