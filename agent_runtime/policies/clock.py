"""Time that every process agrees on, and the deadline of the delivery being handled.

Cross-process decisions (is this message expired? how long until the breaker may be probed?)
use the Redis server's clock (``TIME``), never the local wall clock: a worker whose clock is
skewed then neither expires valid messages nor keeps expired ones. :class:`RedisClock` reads
``TIME`` at most once per ``refresh`` seconds and extrapolates with the local *monotonic*
clock in between (relative durations are safe on any host).

Inside a handler, the message deadline is turned into a local monotonic instant and kept in
a context variable (:func:`delivery_scope`), so every policy run in that handler -- the
handler's own, and the LLM/tool calls it makes -- stops retrying and is cut at the deadline
without the deadline being passed around.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from agent_runtime.transport.base import ServerTime
from protocols.envelope import AgentMessage


class RedisClock:
    """The Redis server's time, cached: at most one ``TIME`` per ``refresh`` seconds (the
    command itself is the transport's: ``transport.clock``)."""

    def __init__(
        self,
        source: ServerTime,
        *,
        refresh: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.refresh = refresh
        self._monotonic = monotonic
        self._server: float | None = None  # server epoch seconds at _local
        self._local = 0.0  # monotonic instant of that reading
        self.reads = 0  # TIME commands sent (tests, metrics)

    async def now(self) -> float:
        """Server epoch seconds (fresh within ``refresh`` s, extrapolated in between)."""
        mono = self._monotonic()
        if self._server is None or mono - self._local >= self.refresh:
            await self._read()
        assert self._server is not None
        return self._server + (self._monotonic() - self._local)

    async def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(await self.now(), UTC)

    async def _read(self) -> None:
        before = self._monotonic()
        try:
            server = await self.source.now()
        except Exception as exc:  # keep extrapolating the last reading; else the local clock
            structlog.get_logger("agent_runtime.policies").warning(
                "redis_time_failed", error=repr(exc)
            )
            if self._server is None:
                self._server, self._local = time.time(), before
            return
        after = self._monotonic()
        self.reads += 1
        self._server = server
        self._local = (before + after) / 2  # the reply reflects the middle of the round trip

    async def deadline_of(self, message: AgentMessage) -> float | None:
        """The message deadline as a local monotonic instant (None: no deadline)."""
        if message.deadline is None:
            return None
        left = message.deadline.timestamp() - await self.now()
        return time.monotonic() + left


@dataclass(slots=True)
class DeliveryScope:
    """What policies share while one delivery is handled: its deadline (local monotonic) and
    how many attempts really failed (an open breaker's refusals are not failures)."""

    deadline: float | None = None
    failures: int = 0

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0


SCOPE: ContextVar[DeliveryScope | None] = ContextVar("agent_runtime_delivery", default=None)


@contextmanager
def delivery_scope(scope: DeliveryScope) -> Iterator[DeliveryScope]:
    """Make ``scope`` the current delivery for policies run inside the block (and in tasks
    started from it)."""
    token = SCOPE.set(scope)
    try:
        yield scope
    finally:
        SCOPE.reset(token)


def current_scope() -> DeliveryScope | None:
    return SCOPE.get()


def remaining() -> float | None:
    """Seconds left before the current delivery's deadline (None: no deadline)."""
    scope = SCOPE.get()
    return None if scope is None else scope.remaining()
