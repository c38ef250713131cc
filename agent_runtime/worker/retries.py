"""Delayed redelivery of failed messages inside one worker.

A failed entry stays in the worker's PEL (its lease is renewed like any in-flight entry).
When it is due, a *counted* retry is XCLAIMed again by the worker itself, so the delivery
count rises and the cap still dead-letters a poison message; an uncounted one (an open
circuit breaker) is handled again as it is. If the worker dies meanwhile, another worker
reclaims the entry after ``reclaim_idle``. A redelivery that fails on a broken connection is
tried again after a jittered backoff; the entry stays in flight (leased) meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from agent_runtime.backoff import Backoff
from agent_runtime.transport.streams import Entry, StreamBus

Dispatch = Callable[[list[Entry]], Awaitable[None]]


class RetryScheduler:
    """Entries waiting for their retry time, keyed by (stream, entry id)."""

    def __init__(self, bus: StreamBus, log: Any) -> None:
        self.bus = bus
        self.log = log
        self._due: dict[tuple[str, bytes], tuple[float, Entry, bool]] = {}
        self._wakeup = asyncio.Event()
        self._backoff = Backoff(0.1, 5.0)

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, entry: Entry, delay: float, *, counted: bool, jitter: float = 0.0) -> None:
        """Redeliver ``entry`` after ``delay`` seconds plus up to ``jitter`` at random (so the
        messages an open breaker refused do not all come back at the same instant)."""
        if jitter:
            delay += random.uniform(0, jitter)  # noqa: S311
        self._due[(entry.stream, entry.entry_id)] = (time.monotonic() + delay, entry, counted)
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(
        self, dispatch: Dispatch, release: Callable[[Entry], None], stopping: asyncio.Event
    ) -> None:
        """Until ``stopping``: sleep to the next due time, then redeliver what is due
        (``release`` forgets the entry's in-flight slot first; ``dispatch`` takes it again)."""
        while not stopping.is_set():
            now = time.monotonic()
            due = [(key, item) for key, item in self._due.items() if item[0] <= now]
            for key, _ in due:
                del self._due[key]
            try:
                await self._redeliver(
                    [(entry, counted) for _, (_, entry, counted) in due], dispatch, release
                )
            except Exception as exc:  # last resort: the scheduler never stops on an error
                self.log.error("redelivery_failed", error=repr(exc))
            wait = min((item[0] for item in self._due.values()), default=now + 3600) - now
            with anyio.move_on_after(max(wait, 0.0)):
                await self._wakeup.wait()
            self._wakeup.clear()

    async def _redeliver(
        self, due: list[tuple[Entry, bool]], dispatch: Dispatch, release: Callable[[Entry], None]
    ) -> None:
        """Claim the counted ones again (one XCLAIM per stream). When that fails (the server
        is unreachable) they stay in flight here and are tried again after a jittered backoff
        that the next successful claim resets."""
        by_stream: dict[str, list[Entry]] = {}
        for entry, counted in due:
            if counted:
                by_stream.setdefault(entry.stream, []).append(entry)
        done = [entry for entry, counted in due if not counted]
        fresh = list(done)
        for stream, entries in by_stream.items():
            try:
                fresh += await self.bus.redeliver(stream, [e.entry_id for e in entries])
            except Exception as exc:
                delay = self._backoff.next_delay()
                self.log.error(
                    "redelivery_failed", stream=stream, error=repr(exc), retry_in=round(delay, 3)
                )
                for entry in entries:
                    self.schedule(entry, delay, counted=True)
                continue
            self._backoff.reset()
            done += entries
        for entry in done:  # no await from here to dispatch's synchronous intake
            release(entry)
        if fresh:
            await dispatch(fresh)
