"""Taking back pending entries nobody is working on, for one worker.

Two kinds, one loop (every ``reclaim_interval``, per inbox stream):

* **orphans**: this consumer's own pending entries that this process does not hold. A read
  whose reply was lost with its connection leaves entries delivered to us that we never saw;
  a dispatch or redelivery that failed on a broken connection forgets its entries. They are
  XCLAIMed again once idle for :data:`ORPHAN_IDLE_MS`, so a connection drop delays them by
  about one ``reclaim_interval`` instead of ``reclaim_idle``.
* **dead consumers' entries**: XAUTOCLAIM of entries idle for ``reclaim_idle``.

Both count a delivery (full-entry claims), so a message that kills its worker still reaches
the dead-letter cap. A failed round is retried after a jittered backoff that a successful
round resets; the loop never ends on an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from agent_runtime.backoff import Backoff, pause
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.transport.streams import Entry, StreamBus
from agent_runtime.worker.observer import Observer

#: Own pending entries idle this long that this process does not hold are orphans. Far above
#: the time between XREADGROUP delivering an entry and the worker registering it.
ORPHAN_IDLE_MS = 2_000

Dispatch = Callable[[list[Entry]], Awaitable[None]]


@dataclass
class Reclaimer:
    bus: StreamBus
    settings: WorkerSettings
    streams: list[str]
    held: Collection[tuple[str, bytes]]  # (stream, entry id) this process works on
    free: Callable[[], int]  # in-flight slots available now
    observer: Observer
    log: Any

    async def run(self, dispatch: Dispatch, stopping: asyncio.Event) -> None:
        backoff = Backoff(0.1, 5.0)
        while not stopping.is_set():
            try:
                await self.round(dispatch, stopping)
            except Exception as exc:
                delay = backoff.next_delay()
                self.log.error("reclaim_failed", error=repr(exc), retry_in=round(delay, 3))
            else:
                backoff.reset()
                delay = self.settings.reclaim_interval
            await pause(delay, stopping)

    async def round(self, dispatch: Dispatch, stopping: asyncio.Event) -> None:
        idle_ms = int(self.settings.reclaim_idle * 1000)
        for stream in self.streams:
            free = self.free()
            if free <= 0 or stopping.is_set():
                return
            orphans = await self.orphans(stream, free)
            entries: list[Entry] = []
            deleted = 0
            if free > len(orphans):
                entries, deleted = await self.bus.reclaim(stream, idle_ms, free - len(orphans))
            if entries or deleted:
                self.log.info(
                    "entries_reclaimed",
                    stream=stream,
                    count=len(entries),
                    deleted_while_pending=deleted,
                )
                self.observer.reclaimed(stream, len(entries), deleted)
            if orphans or entries:
                await dispatch(orphans + entries)

    async def orphans(self, stream: str, limit: int) -> list[Entry]:
        """Own pending entries idle for :data:`ORPHAN_IDLE_MS` that this process does not hold,
        claimed again (an entry acked or renewed meanwhile is not taken)."""
        held = self.held
        span = limit + len(held)  # the held ones come back too: skip them
        ids = await self.bus.own_pending(stream, ORPHAN_IDLE_MS, span)
        lost = [i for i in ids if (stream, i) not in held][:limit]
        if not lost:
            return []
        entries = await self.bus.claim(stream, lost, ORPHAN_IDLE_MS)
        if entries:
            self.log.warning("orphans_reclaimed", stream=stream, count=len(entries))
        return entries
