"""The retry pacing of every loop (agent_runtime/backoff.py) and of reconnects (the pool's
ReconnectGate): delays grow, stay jittered within bounds, start over after a success; a failing
server is tried one socket at a time however many callers want a connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from agent_runtime.backoff import Backoff, until_done
from agent_runtime.transport.connect import ReconnectGate, unavailable

pytestmark = pytest.mark.anyio


def test_delays_double_up_to_the_cap_within_the_jitter_band() -> None:
    for draw in (0.0, 0.5, 0.999):
        backoff = Backoff(0.1, 2.0, jitter=0.5, rand=lambda d=draw: d)
        delays = [backoff.next_delay() for _ in range(8)]
        ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
        for delay, ceiling in zip(delays, ceilings, strict=True):
            assert ceiling / 2 <= delay <= ceiling


def test_a_success_starts_the_next_failure_at_the_initial_delay() -> None:
    backoff = Backoff(0.1, 5.0, jitter=0.0)
    for _ in range(10):
        backoff.next_delay()
    assert backoff.next_delay() == 5.0  # a long outage reached the cap...
    backoff.reset()
    assert backoff.next_delay() == 0.1  # ...and the next blip after a success costs 0.1 s


def test_full_jitter_spreads_over_the_whole_range() -> None:
    low = Backoff(1.0, 1.0, jitter=1.0, rand=lambda: 0.999).next_delay()
    high = Backoff(1.0, 1.0, jitter=1.0, rand=lambda: 0.0).next_delay()
    assert low < 0.01 and high == 1.0


@pytest.mark.parametrize("bad", [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (0.1, 1.0, 1.5)])
def test_nonsense_settings_are_refused(bad: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*bad)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A connect function: refuses while ``down``; counts socket attempts."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0

    async def connect(self) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionRefusedError("refused")


async def open_many(gate: ReconnectGate, server: Server, callers: int) -> list[str]:
    async def one() -> str:
        try:
            await gate.open(server.connect)
            return "ok"
        except (OSError, RedisConnectionError) as exc:
            return type(exc).__name__

    return list(await asyncio.gather(*[one() for _ in range(callers)]))


async def test_a_failing_server_gets_one_socket_at_a_time_and_callers_fail_fast() -> None:
    clock, server = Clock(), Server()
    gate = ReconnectGate(Backoff(0.2, 2.0, jitter=0.0), clock=clock)
    await open_many(gate, server, 1)  # the first failure
    assert server.attempts == 1
    # 50 callers before the backoff delay passed: no socket, the last error again at once
    assert set(await open_many(gate, server, 50)) == {"ConnectionRefusedError"}
    assert server.attempts == 1
    clock.now += 0.25  # the delay passed: exactly one of many callers tries the socket
    await open_many(gate, server, 50)
    assert server.attempts == 2
    clock.now += 0.3  # not yet: the second delay is 0.4 s
    await open_many(gate, server, 10)
    assert server.attempts == 2
    server.down = False
    clock.now += 0.15
    assert await open_many(gate, server, 1) == ["ok"]
    # back to normal: connects run freely, and the next failure waits only the first delay
    assert await open_many(gate, server, 5) == ["ok"] * 5
    server.down = True
    await open_many(gate, server, 1)
    clock.now += 0.25
    await open_many(gate, server, 1)
    assert server.attempts == 3 + 5 + 2


def test_unavailable_tells_transient_server_states_from_errors_about_the_command() -> None:
    assert unavailable(RedisConnectionError("Connection closed by server."))
    assert unavailable(ConnectionRefusedError())
    assert unavailable(ResponseError("BUSY Redis is busy running a script"))
    assert not unavailable(ResponseError("WRONGTYPE Operation against a key"))
    assert not unavailable(ValueError("bad"))


async def test_until_done_waits_out_unavailability_and_lets_other_errors_through() -> None:
    calls: list[int] = []
    stopping = asyncio.Event()
    log: Any = structlog.get_logger()

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RedisConnectionError("refused")

    assert await until_done(flaky, unavailable, stopping, log, "test")
    assert len(calls) == 3

    async def broken() -> None:
        raise ResponseError("WRONGTYPE Operation against a key")

    with pytest.raises(ResponseError):
        await until_done(broken, unavailable, stopping, log, "test")

    async def down() -> None:
        stopping.set()  # the worker is asked to stop while the server is away
        raise RedisConnectionError("refused")

    assert not await until_done(down, unavailable, stopping, log, "test")
