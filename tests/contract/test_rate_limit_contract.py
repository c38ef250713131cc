"""The fleet rate limit's scripts (agent_runtime/transport/ratelimit.py) and its limiter
(agent_runtime/policies/ratelimit.py): one contract for the real embedded server and the
in-memory transport's Python ports (``backend``).

The memory backend's clock is a ManualClock, so the tests that need time to pass (a window
ending, a dead worker's lease running out) move it instead of sleeping; on the real server
those tests use windows of a few hundred milliseconds and wait on the limiter itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from agent_runtime.config.limits import AccountLimits
from agent_runtime.policies.clock import DeliveryScope, delivery_scope
from agent_runtime.policies.ratelimit import RateLimitDeadline, RateLimiter, RateLimitTooLarge
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.transport.memory_store import ManualClock
from agent_runtime.transport.ratelimit import RedisRateLimits

pytestmark = pytest.mark.anyio


@dataclass
class Backend:
    clients: list[Any]  # two clients of one store: two worker processes
    clock: ManualClock | None  # the memory store's clock (None: the real server's)
    keys: Keys

    def limiter(self, i: int = 0, observer: Any = None, **spec: Any) -> RateLimiter:
        limits = AccountLimits.model_validate({"provider": "openai", **spec})
        store = RedisRateLimits(self.clients[i])
        return RateLimiter("acct", limits, store, self.keys, observer=observer)


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield _memory(prefix)
        return
    async with _real(request.getfixturevalue("redis_url"), prefix) as real:
        yield real


@pytest.fixture
def memory(prefix: str) -> Backend:
    """The in-memory transport alone: its clock moves when a test says so."""
    return _memory(prefix)


@pytest.fixture
async def real(redis_url: str, prefix: str) -> AsyncIterator[Backend]:
    """The real server alone: time passes for real."""
    async with _real(redis_url, prefix) as made:
        yield made


def _memory(prefix: str) -> Backend:
    clock = ManualClock()
    transport = MemoryTransport(clock)
    return Backend(
        [transport.redis, MemoryTransport.on(transport.store).redis], clock, Keys(prefix)
    )


@asynccontextmanager
async def _real(url: str, prefix: str) -> AsyncIterator[Backend]:
    clients = [Redis.from_url(url), Redis.from_url(url)]
    try:
        yield Backend(clients, None, Keys(prefix))
    finally:
        async for key in clients[0].scan_iter(f"{prefix}*"):
            await clients[0].delete(key)
        for client in clients:
            await client.aclose()


class Observed:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.now_waiting = 0

    def waiting(self, limit: str, delta: int) -> None:
        self.now_waiting += delta
        self.events.append(("waiting", str(delta)))

    def acquired(self, limit: str, seconds: float) -> None:
        self.events.append(("acquired", limit))

    def refused(self, limit: str, reason: str, seconds: float) -> None:
        self.events.append(("refused", reason))


async def test_admits_the_limit_then_says_how_long_to_wait(backend: Backend) -> None:
    limiter = backend.limiter(requests_per_minute=3, window_seconds=60)
    for _ in range(3):
        grant = await limiter.store.acquire(
            limiter.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(3, 1)]
        )
        assert grant.status == 1
    full = await limiter.store.acquire(
        limiter.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(3, 1)]
    )
    assert full.status == 0
    # running calls could end at once (least wait: one window) or run their lease (+5 s)
    assert 60_000 < full.least_wait_ms <= 60_001
    assert full.least_wait_ms < full.wait_ms <= 65_001


async def test_other_process_sees_the_same_limit(backend: Backend) -> None:
    first, second = (
        backend.limiter(0, requests_per_minute=2),
        backend.limiter(1, requests_per_minute=2),
    )
    await first.acquire(tokens=0, lease=5)
    await second.acquire(tokens=0, lease=5)
    grant = await second.store.acquire(
        second.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(2, 1)]
    )
    assert grant.status == 0


async def test_wait_past_the_deadline_fails_at_once_as_deadline(backend: Backend) -> None:
    observed = Observed()
    limiter = backend.limiter(observer=observed, requests_per_minute=1, window_seconds=600)
    async with limiter.slot(tokens=0, lease=5):
        pass
    scope = DeliveryScope(deadline=time.monotonic() + 30)
    with delivery_scope(scope), pytest.raises(RateLimitDeadline, match="deadline"):
        await limiter.acquire(tokens=0, lease=5)  # the next place frees in 600 s: no wait
    assert ("refused", "deadline") in observed.events
    assert observed.now_waiting == 0


async def test_a_call_larger_than_the_limit_is_refused_permanently(backend: Backend) -> None:
    limiter = backend.limiter(tokens_per_minute=1000)
    with pytest.raises(RateLimitTooLarge, match="1001 tokens"):
        await limiter.acquire(tokens=1001, lease=5)


async def test_tokens_are_settled_with_the_real_usage(backend: Backend) -> None:
    limiter = backend.limiter(requests_per_minute=100, tokens_per_minute=1000)
    async with limiter.slot(tokens=900, lease=5) as slot:
        _now, usage = await limiter.store.usage(limiter.keys, limiter.window_ms)
        assert usage == [(1, 1), (1, 900)]  # the estimate is reserved while the call runs
        slot.tokens = 120
    _now, usage = await limiter.store.usage(limiter.keys, limiter.window_ms)
    assert usage == [(1, 1), (1, 120)]
    # room for 880 more tokens now, not for 881
    assert (
        await limiter.store.acquire(
            limiter.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(100, 1), (1000, 881)]
        )
    ).status == 0
    assert (
        await limiter.store.acquire(
            limiter.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(100, 1), (1000, 880)]
        )
    ).status == 1


async def test_admission_is_all_or_nothing_across_meters(backend: Backend) -> None:
    limiter = backend.limiter(requests_per_minute=10, tokens_per_minute=100)
    await limiter.acquire(tokens=90, lease=5)
    grant = await limiter.store.acquire(
        limiter.keys, _member(), window_ms=60_000, lease_ms=5_000, costs=[(10, 1), (100, 20)]
    )
    assert grant.status == 0
    _now, usage = await limiter.store.usage(limiter.keys, limiter.window_ms)
    assert usage == [(1, 1), (1, 90)]  # the refused call took no request place either


async def test_a_dead_workers_call_holds_its_place_until_lease_and_window_pass(
    memory: Backend,
) -> None:
    backend = memory
    assert backend.clock is not None
    limiter = backend.limiter(requests_per_minute=1, window_seconds=10, lease_seconds=30)
    await limiter.acquire(tokens=0, lease=30)  # never settled: its worker died
    backend.clock.advance(39.9)
    grant = await limiter.store.acquire(
        limiter.keys, _member(), window_ms=10_000, lease_ms=30_000, costs=[(1, 1)]
    )
    assert grant.status == 0
    backend.clock.advance(0.2)
    assert (await limiter.acquire(tokens=0, lease=30)).member


async def test_a_settled_call_frees_its_place_one_window_after_it_ended(memory: Backend) -> None:
    backend = memory
    assert backend.clock is not None
    limiter = backend.limiter(requests_per_minute=1, window_seconds=10)
    async with limiter.slot(tokens=0, lease=300):
        backend.clock.advance(2)  # the call takes 2 s
    backend.clock.advance(9.99)
    grant = await limiter.store.acquire(
        limiter.keys, _member(), window_ms=10_000, lease_ms=5_000, costs=[(1, 1)]
    )
    assert grant.status == 0 and grant.least_wait_ms <= 20
    backend.clock.advance(0.02)
    assert (await limiter.acquire(tokens=0, lease=5)).member


async def test_concurrent_callers_never_put_more_than_the_limit_in_any_window(
    real: Backend,
) -> None:
    """Twelve calls from two 'processes' against 3 per 0.3 s: each call's arrival (a time
    between its admission and its end, as a provider would see it) is recorded; no 0.3 s
    window of arrivals holds more than 3, and every call got through."""
    window, limit = 0.3, 3
    limiters = [real.limiter(i, requests_per_minute=limit, window_seconds=window) for i in (0, 1)]
    arrivals: list[float] = []

    async def call(i: int) -> None:
        async with limiters[i % 2].slot(tokens=0, lease=5):
            await anyio.sleep(0.01 * (i % 3))  # network latency, varied
            arrivals.append(time.time())
            await anyio.sleep(0.01)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(call, i)
    assert len(arrivals) == 12
    arrivals.sort()
    for i, start in enumerate(arrivals):
        in_window = [t for t in arrivals[i:] if t - start <= window]
        assert len(in_window) <= limit, (start, in_window)


def _member() -> str:
    import uuid

    return uuid.uuid4().hex


async def test_an_agent_types_redis_user_may_run_the_limit(real: Backend) -> None:
    """Under the least-privilege ACL user of an agent type (transport/acl.py), every command
    of the scripts is allowed: a limited worker does not fail with NOPERM."""
    from agent_runtime.transport.acl import agent_rules

    admin = real.clients[0]
    user, password = f"{real.keys.prefix}-caller", "pw-" + _member()
    rules = agent_rules(real.keys, "caller", [])
    await admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)
    path = admin.connection_pool.connection_kwargs["path"]
    limited = Redis(unix_socket_path=path, username=user, password=password)
    try:
        backend = Backend([limited], None, real.keys)
        limiter = backend.limiter(requests_per_minute=1, tokens_per_minute=100)
        async with limiter.slot(tokens=10, lease=5) as slot:
            slot.tokens = 5
        scope = DeliveryScope(deadline=time.monotonic() + 5)
        with delivery_scope(scope), pytest.raises(RateLimitDeadline):
            await limiter.acquire(tokens=10, lease=5)  # counts a refusal in the stats hash
        _now, usage = await limiter.store.usage(limiter.keys, limiter.window_ms)
        assert usage == [(1, 1), (1, 5)]
        assert (await limiter.store.stats(limiter.stats_key))["refused_deadline"] == 1
    finally:
        await limited.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
