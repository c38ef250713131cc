"""The agents' state API (``runtime.state``, agent_runtime/transport/base.py ``State``): one
contract for every backend. ``backend`` is fixture-parametrised: the real embedded server
(RedisState), the dict-backed state of AgentHarness and the in-memory transport
(agent_runtime/transport/memory.py).

A "concurrent writer" is another client writing the key while a transaction's function runs
(``backend.poke``: a synchronous write from outside the transaction), which is exactly the
race ``transact`` must survive: the transaction runs again on the fresh value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from agent_runtime.transport.base import State, StateConflict
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.transport.state import RedisState

pytestmark = pytest.mark.anyio


@dataclass
class Backend:
    state: State
    other: State  # a second client of the same store (another process, in real life)
    poke: Callable[[str, bytes], None]  # a concurrent writer's plain write


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Backend]:
    if request.param == "memory":  # the in-memory transport: two clients of one store
        memory = MemoryTransport()
        yield Backend(
            memory.state,
            MemoryTransport.on(memory.store).state,
            lambda key, value: memory.store.write_string(key, value, 60),
        )
        return
    url = request.getfixturevalue("redis_url")
    clients = [Redis.from_url(url), Redis.from_url(url)]
    writer = redis_sync.Redis.from_url(url)
    yield Backend(
        RedisState(clients[0]),
        RedisState(clients[1]),
        lambda key, value: writer.set(key, value, ex=60),
    )
    for key in writer.scan_iter(f"{prefix}*"):
        writer.delete(key)
    writer.close()
    for client in clients:
        await client.aclose()


async def gone(state: State, key: str, *, hashed: bool = False) -> bool:
    """Poll until ``key`` has expired (TTLs are whole seconds on the server)."""
    with anyio.fail_after(10):
        while await (state.hash_get_all(key) if hashed else state.get(key)):
            await anyio.sleep(0.05)
    return True


def counter(raw: bytes | None) -> tuple[bytes, int]:
    n = int(raw or 0) + 1
    return str(n).encode(), n


async def test_put_get_delete(backend: Backend, prefix: str) -> None:
    state, key = backend.state, f"{prefix}:v"
    assert await state.get(key) is None
    await state.put(key, b"\x00bytes", ttl=60)
    assert await state.get(key) == b"\x00bytes"
    await state.put(key, "text é", ttl=60)  # str is stored as UTF-8
    assert await backend.other.get(key) == "text é".encode()
    await state.delete(key, f"{prefix}:never-written")
    assert await state.get(key) is None


async def test_put_expires_after_its_ttl(backend: Backend, prefix: str) -> None:
    key = f"{prefix}:short"
    await backend.state.put(key, b"x", ttl=1)
    assert await backend.state.get(key) == b"x"
    assert await gone(backend.state, key)


async def test_transact_creates_updates_and_returns_the_result(
    backend: Backend, prefix: str
) -> None:
    state, key = backend.state, f"{prefix}:n"
    assert await state.transact(key, counter, ttl=60) == 1
    assert await state.transact(key, counter, ttl=60) == 2
    assert await state.get(key) == b"2"


async def test_transact_writing_nothing_leaves_the_value(backend: Backend, prefix: str) -> None:
    state, key = backend.state, f"{prefix}:keep"
    await state.put(key, b"old", ttl=60)

    def look(raw: bytes | None) -> tuple[None, bytes | None]:
        return None, raw

    assert await state.transact(key, look, ttl=60) == b"old"
    assert await state.get(key) == b"old"
    assert await state.transact(f"{prefix}:absent", look, ttl=60) is None
    assert await state.get(f"{prefix}:absent") is None


async def test_transact_runs_again_on_the_value_a_concurrent_writer_wrote(
    backend: Backend, prefix: str
) -> None:
    key = f"{prefix}:race"
    seen: list[bytes | None] = []

    def increment_after_losing_once(raw: bytes | None) -> tuple[bytes, int]:
        seen.append(raw)
        if len(seen) == 1:
            backend.poke(key, b"10")  # another client wins the race
        return counter(raw)

    assert await backend.state.transact(key, increment_after_losing_once, ttl=60) == 11
    assert seen == [None, b"10"]
    assert await backend.other.get(key) == b"11"


async def test_transact_gives_up_after_its_attempts(backend: Backend, prefix: str) -> None:
    key = f"{prefix}:hot"
    runs: list[int] = []

    def always_loses(raw: bytes | None) -> tuple[bytes, None]:
        runs.append(1)
        backend.poke(key, str(len(runs)).encode())
        return b"mine", None

    with pytest.raises(StateConflict) as caught:
        await backend.state.transact(key, always_loses, ttl=60, attempts=3)
    assert caught.value.transient is True  # the delivery is retried, not dead-lettered
    assert len(runs) == 3
    assert await backend.state.get(key) == b"3"  # the other writer's value stands


async def test_concurrent_transactions_lose_no_update(backend: Backend, prefix: str) -> None:
    key = f"{prefix}:many"

    async def bump(state: State) -> None:
        await state.transact(key, counter, ttl=60)

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(bump, backend.state if i % 2 else backend.other)
    assert await backend.state.get(key) == b"40"


async def test_transact_sets_the_ttl(backend: Backend, prefix: str) -> None:
    key = f"{prefix}:tx-ttl"
    await backend.state.transact(key, counter, ttl=1)
    assert await backend.state.get(key) == b"1"
    assert await gone(backend.state, key)


async def test_hash_put_get_delete_and_ttl(backend: Backend, prefix: str) -> None:
    state, key = backend.state, f"{prefix}:h"
    assert await state.hash_get_all(key) == {}
    await state.hash_put(key, {"s1": b"one", "s2": "two"}, ttl=60)
    await state.hash_put(key, {"s3": b"three"}, ttl=60)
    assert await backend.other.hash_get_all(key) == {"s1": b"one", "s2": b"two", "s3": b"three"}
    await state.hash_delete(key, "s1", "s3", "never")
    await state.hash_delete(f"{prefix}:no-hash", "s1")
    assert await state.hash_get_all(key) == {"s2": b"two"}
    await state.hash_put(key, {"s4": b"four"}, ttl=1)  # the TTL is the hash's
    assert await gone(state, key, hashed=True)


async def test_values_are_bytes_whatever_was_written(backend: Backend, prefix: str) -> None:
    key = f"{prefix}:types"
    await backend.state.put(key, "1", ttl=60)
    value: Any = await backend.state.get(key)
    assert isinstance(value, bytes)
