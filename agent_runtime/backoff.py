"""Jittered exponential backoff that resets after a success: the one retry pacing of every
loop that talks to Redis (read, reclaim, lease, heartbeat, trim, retry scheduler, commit,
start-up) and of the connection pool's reconnect gate (transport/connect.py).

The n-th delay after a success is drawn from ``[(1 - jitter) * d, d]`` with
``d = min(cap, initial * 2 ** n)``: ``jitter=1`` is "full jitter", the default ``0.5`` is
"equal jitter", whose floor of ``d / 2`` keeps a failing loop from retrying in bursts.
:meth:`Backoff.reset` after a success makes the next failure start at ``initial`` again, so
one outage does not make every later blip wait ``cap``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


class Backoff:
    """``next_delay()`` after each failure, ``reset()`` after a success."""

    def __init__(
        self,
        initial: float = 0.1,
        cap: float = 5.0,
        jitter: float = 0.5,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap (got {initial}, {cap})")
        if not 0 <= jitter <= 1:
            raise ValueError(f"backoff jitter must be within [0, 1] (got {jitter})")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        self._rand = rand

    def next_delay(self) -> float:
        """The pause before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return ceiling * (1 - self.jitter * self._rand())

    def reset(self) -> None:
        """A success: the next failure waits about ``initial`` again."""
        self.failures = 0


async def pause(seconds: float, stopping: asyncio.Event) -> None:
    """Sleep ``seconds``, or less if ``stopping`` is set meanwhile."""
    with anyio.move_on_after(seconds):
        await stopping.wait()


async def until_done(
    action: Callable[[], Awaitable[None]],
    retryable: Callable[[BaseException], bool],
    stopping: asyncio.Event,
    log: Any,
    step: str,
) -> bool:
    """Run ``action`` until it succeeds, backing off (0.1 s doubling to 5 s, jittered) after
    each ``retryable`` error; any other error propagates. False if ``stopping`` is set first."""
    backoff = Backoff(0.1, 5.0)
    while not stopping.is_set():
        try:
            await action()
            return True
        except Exception as exc:
            if not retryable(exc):
                raise
            delay = backoff.next_delay()
            log.warning("redis_unavailable", step=step, error=repr(exc), retry_in=round(delay, 3))
            await pause(delay, stopping)
    return False
