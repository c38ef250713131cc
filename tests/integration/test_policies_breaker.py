"""The shared circuit breaker and the Redis clock on the real embedded server: state is one
hash for every breaker instance (every process), timing comes from the server's clock,
exactly one caller probes a half-open breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from agent_runtime.errors import BreakerOpen, LLMRequestError
from agent_runtime.policies import BreakerPolicy, RedisClock, SharedBreaker, error_matcher
from agent_runtime.transport.breaker_scripts import RedisBreakers
from agent_runtime.transport.clock import RedisTime
from agent_runtime.transport.connect import connect
from agent_runtime.transport.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Any]]:
    """Two independent connections: two 'processes' as far as Redis can tell."""
    made = [connect(redis_url).redis for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.changes.append((cb.name, str(old_state), str(new_state)))


def make(redis: Any, prefix: str, listener: Recorder | None = None, **policy: Any) -> SharedBreaker:
    spec = BreakerPolicy.model_validate({"fail_max": 2, "reset_timeout": 0.3, **policy})
    return SharedBreaker(
        "dep",
        spec,
        RedisBreakers(redis),
        Keys(prefix),
        counts=error_matcher(spec.failure_on),
        listeners=[listener] if listener else [],
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def fail() -> None:
    raise ConnectionError("dependency down")


async def ok() -> str:
    return "ok"


async def test_fail_max_opens_it_for_every_instance(clients: list[Any], prefix: str) -> None:
    seen = Recorder()
    first, second = make(clients[0], prefix), make(clients[1], prefix, seen)
    for breaker in (first, second):  # failures from two processes add up
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    calls = []

    async def must_not_run() -> None:
        calls.append(1)

    for breaker in (first, second):
        with pytest.raises(BreakerOpen) as info:
            await breaker.call(must_not_run)
        assert 0 < info.value.remaining <= 0.3
    assert calls == []
    assert (await first.state()).state == (await second.state()).state == "open"
    assert seen.changes == [("dep", "closed", "open")]


async def test_half_open_lets_exactly_one_caller_probe(clients: list[Any], prefix: str) -> None:
    breakers = [make(clients[0], prefix), make(clients[1], prefix)]
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breakers[0].call(fail)
    await eventually(lambda: _probe_ready(breakers[0]))
    release = anyio.Event()
    probes: list[int] = []
    refused: list[str] = []

    async def slow_ok() -> str:
        await release.wait()
        return "ok"

    async def caller(i: int) -> None:
        try:
            await breakers[i % 2].call(slow_ok, on_probe=lambda: probes.append(i))
        except BreakerOpen as exc:
            refused.append(exc.state)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(caller, i)
        await eventually(lambda: _async(len(probes) + len(refused) == 6))
        assert len(probes) == 1 and refused == ["half-open"] * 5
        assert (await breakers[1].state()).state == "half-open"
        release.set()
    assert (await breakers[1].state()).state == "closed"
    assert await breakers[1].call(ok) == "ok"


async def test_failed_probe_reopens_and_a_cancelled_probe_frees_the_lock(
    clients: list[Any], prefix: str
) -> None:
    breaker = make(clients[0], prefix)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    await eventually(lambda: _probe_ready(breaker))
    with pytest.raises(ConnectionError):
        await breaker.call(fail)  # the probe fails: open again, for another reset_timeout
    state = await breaker.state()
    assert state.state == "open" and state.trips == 2 and state.remaining > 0
    await eventually(lambda: _probe_ready(breaker))

    async def hangs() -> None:
        await anyio.sleep(30)

    with anyio.move_on_after(0.1):
        await breaker.call(hangs)  # probe cancelled (e.g. an enclosing timeout)
    assert await breaker.call(ok) == "ok"  # the lock was given back: next caller probes
    assert (await breaker.state()).state == "closed"


async def test_errors_outside_failure_on_do_not_open_it(clients: list[Any], prefix: str) -> None:
    breaker = make(clients[0], prefix)

    async def bad_request() -> None:
        raise LLMRequestError("400: the dependency answered")

    for _ in range(5):
        with pytest.raises(LLMRequestError):
            await breaker.call(bad_request)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    await breaker.call(ok)  # a success resets the consecutive count
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert (await breaker.state()).state == "closed"


async def test_redis_clock_follows_the_server_not_the_local_clock(
    clients: list[Any],
) -> None:
    local = [1000.0]
    clock = RedisClock(RedisTime(clients[0]), refresh=1.0, monotonic=lambda: local[0])
    first = await clock.now()
    seconds, micros = await clients[0].time()
    assert abs(first - (int(seconds) + int(micros) / 1e6)) < 1.0
    local[0] += 0.5
    assert await clock.now() == pytest.approx(first + 0.5)
    assert clock.reads == 1  # within refresh: extrapolated, no TIME
    local[0] += 0.6
    await clock.now()
    assert clock.reads == 2


async def _probe_ready(breaker: SharedBreaker) -> bool:
    state = await breaker.state()
    return state.state == "open" and state.remaining == 0


async def _async(value: bool) -> bool:
    return value
