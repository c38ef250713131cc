"""Fleet rate limits: a call waits for its place in a limit every worker shares in Redis.

    limiter = policies.rate_limiter("openai-main")          # None: no such account
    async with limiter.slot(tokens=estimate, lease=70) as slot:
        completion = await call()
        slot.tokens = completion.usage.input_tokens + completion.usage.output_tokens

The counting (a sliding window over call *end* times, one Lua script per admission) is
agent_runtime/transport/ratelimit.py. Here: the wait. A full limit answers how long until a
place frees; the caller sleeps that long and asks again (one script call per wake-up, never a
provider call), so no request is sent only to be refused with a 429. If even the earliest
possible place lies past the request's deadline (policies/clock.py), the call fails at once
with :class:`RateLimitDeadline` (a :class:`~agent_runtime.errors.DeadlineExceeded`:
permanent, never retried); a call that could never fit (more tokens than the limit) fails
with :class:`RateLimitTooLarge` (permanent). Waits are reported to a :class:`RateObserver`
(the worker's Prometheus metrics).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog

from agent_runtime.config.limits import AccountLimits, MessageLimits
from agent_runtime.errors import AgentRuntimeError, DeadlineExceeded
from agent_runtime.policies.clock import remaining
from agent_runtime.transport.base import RateLimitStore
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.ratelimit import meter_keys

#: Random extra sleep after a wait (seconds), so waiting workers do not wake in lockstep.
WAKE_JITTER = 0.02


class RateLimitDeadline(DeadlineExceeded):
    """The earliest place in the rate limit lies past the request's deadline."""


class RateLimitTooLarge(AgentRuntimeError):
    """The call costs more than its rate limit admits in a whole window (permanent)."""

    transient = False


class RateObserver(Protocol):
    """Receives the waits (the worker's metrics implement it)."""

    def waiting(self, limit: str, delta: int) -> None: ...

    def acquired(self, limit: str, seconds: float) -> None: ...

    def refused(self, limit: str, reason: str, seconds: float) -> None: ...


@dataclass(slots=True)
class Slot:
    """An admitted call. Set :attr:`tokens` to its real usage before the block ends."""

    member: str
    reserved: int
    waited: float
    tokens: int | None = field(default=None)


class RateLimiter:
    """One account's limit (all its meters), as seen by one process."""

    def __init__(
        self,
        name: str,
        spec: AccountLimits | MessageLimits,
        store: RateLimitStore,
        keys: Keys,
        *,
        observer: RateObserver | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.store = store
        self.meters = spec.meters()
        self.lease_seconds = getattr(spec, "lease_seconds", None)
        self.keys = meter_keys(keys, name, [meter for meter, _limit in self.meters])
        self.stats_key = keys.rate_limit(name, "stats")
        self.window_ms = int(spec.window_seconds * 1000)
        self.observer = observer
        self.log = structlog.get_logger("agent_runtime.policies").bind(rate_limit=name)

    @asynccontextmanager
    async def slot(self, *, tokens: int, lease: float) -> AsyncIterator[Slot]:
        """Wait for a place (``tokens``: the reserved estimate), run the block, then settle
        with the block's :attr:`Slot.tokens` (also when it fails or is cancelled)."""
        slot = await self.acquire(tokens=tokens, lease=lease)
        try:
            yield slot
        finally:
            with anyio.CancelScope(shield=True):
                await self.settle(slot)

    async def acquire(self, *, tokens: int, lease: float) -> Slot:
        member = uuid.uuid4().hex
        lease_ms = int((self.lease_seconds or lease) * 1000)
        costs = [(limit, tokens if meter == "tokens" else 1) for meter, limit in self.meters]
        started = time.monotonic()
        waiting = False
        try:
            while True:
                grant = await self.store.acquire(
                    self.keys, member, window_ms=self.window_ms, lease_ms=lease_ms, costs=costs
                )
                waited = time.monotonic() - started
                if grant.status == 1:
                    self._observe("acquired", waited)
                    if waiting:
                        await self._count(waited=1, wait_ms=int(waited * 1000))
                    return Slot(member, tokens, waited)
                if grant.status < 0:
                    self._observe("too_large", waited)
                    await self._count(refused_too_large=1)
                    meter, limit = self.meters[grant.wait_ms - 1]
                    raise RateLimitTooLarge(
                        f"rate limit {self.name}: the call needs {tokens} {meter}, more than "
                        f"the {limit} one window admits"
                    )
                if self._past_deadline(grant.least_wait_ms / 1000, waited):
                    await self._count(refused_deadline=1)
                    self._raise_deadline(grant.least_wait_ms / 1000)
                if not waiting and self.observer is not None:
                    self.observer.waiting(self.name, 1)
                waiting = True
                self.log.debug("rate_limit_waiting", wait_ms=grant.least_wait_ms)
                await anyio.sleep(grant.least_wait_ms / 1000 + random.uniform(0, WAKE_JITTER))  # noqa: S311
        finally:
            if waiting and self.observer is not None:
                self.observer.waiting(self.name, -1)

    async def settle(self, slot: Slot) -> None:
        costs = [slot.tokens if meter == "tokens" else None for meter, _ in self.meters]
        try:
            await self.store.settle(self.keys, slot.member, costs)
        except Exception as exc:  # the entry then ends at its lease: safe, only slower
            self.log.warning("rate_limit_settle_failed", error=repr(exc))

    def _past_deadline(self, least: float, waited: float) -> bool:
        left = remaining()
        if left is not None and least >= left:
            self._observe("deadline", waited)
            return True
        return False

    def _raise_deadline(self, least: float) -> None:
        left = remaining() or 0.0
        raise RateLimitDeadline(
            f"rate limit {self.name}: the next place frees in {least:.1f} s, after the "
            f"request's deadline ({max(left, 0):.1f} s left)"
        )

    async def _count(self, **fields: int) -> None:
        """The fleet-wide wait statistics ``status`` shows (best effort)."""
        try:
            await self.store.count(self.stats_key, fields)
        except Exception as exc:
            self.log.warning("rate_limit_stats_failed", error=repr(exc))

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.observer is None:
            return
        if outcome == "acquired":
            self.observer.acquired(self.name, seconds)
        else:
            self.observer.refused(self.name, outcome, seconds)


class MessageRateMiddleware:
    """Worker middleware of an agent type with ``rate_limit:``: each handling (attempt) first
    takes a place in the type's fleet-wide limit (inside the delivery's deadline scope, so a
    place past the deadline ends the message as expired), and holds it, like an LLM call,
    until one window after the handling ended: whatever the delays between admission and
    the handler's effects, no window sees more than ``messages_per_second`` of them.
    ``lease``: how long a handling of a dead worker holds its place (the handler timeout +
    a margin)."""

    def __init__(self, limiter: RateLimiter, lease: float) -> None:
        self.limiter = limiter
        self.lease = lease

    async def handle(self, ctx: Any, call_next: Callable[[Any], Awaitable[None]]) -> None:
        async with self.limiter.slot(tokens=0, lease=self.lease):
            await call_next(ctx)


def estimate_tokens(*texts: str, max_tokens: int) -> int:
    """A call's token reservation: UTF-8 bytes / 4 of its prompt texts, rounded up, plus the
    answer's ``max_tokens`` (the providers' own pre-call estimate is of this kind)."""
    size = sum(len(t.encode()) for t in texts)
    return -(-size // 4) + max_tokens
