"""The worker's chores around message handling: lease renewal, the handler-timeout watchdog,
committing with retry, the heartbeat, safe trimming of the inboxes, removing the group's
consumers of gone workers, and handing entries back on shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from agent_runtime.backoff import Backoff, pause
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.transport.base import Heartbeats
from agent_runtime.transport.streams import StreamBus

Leases = Callable[[], dict[str, list[bytes]]]


def by_stream(keys: Iterable[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """Group (stream, entry id) pairs by stream."""
    out: dict[str, list[bytes]] = {}
    for stream, entry_id in keys:
        out.setdefault(stream, []).append(entry_id)
    return out


@dataclass
class Housekeeping:
    """Chores of one worker. Every loop logs and carries on when Redis fails, retrying after
    a jittered exponential backoff that its next success resets (backoff.py)."""

    bus: StreamBus
    settings: WorkerSettings
    log: Any
    heartbeats: Heartbeats

    async def lease_loop(self, leases: Leases) -> None:
        """Renew the lease of every entry this worker holds (XCLAIM JUSTID: no count). A
        failed renewal is retried after a backoff, well before the lease runs out."""
        backoff = Backoff(0.1, 5.0)
        delay = self.settings.lease_every
        while True:
            await anyio.sleep(delay)
            try:
                await self.bus.renew(leases())
            except Exception as exc:
                delay = self._failed(backoff, self.settings.lease_every)
                self.log.error("lease_renewal_failed", error=repr(exc), retry_in=delay)
            else:
                backoff.reset()
                delay = self.settings.lease_every

    @staticmethod
    def _failed(backoff: Backoff, interval: float) -> float:
        """The pause after a failed chore: the backoff's next delay, never over ``interval``."""
        return round(min(backoff.next_delay(), interval), 3)

    async def watchdog(self, tasks: dict[Any, float], timed_out: set[Any]) -> None:
        """Cancel handler tasks past their deadline (``tasks``: task -> loop-time deadline).
        One watchdog instead of a timer per message; precision is a tenth of
        ``handler_timeout``, at most 0.5 s. Cancelled tasks are put in ``timed_out``."""
        loop = asyncio.get_running_loop()
        interval = min(0.5, self.settings.handler_timeout / 10)
        while True:
            await anyio.sleep(interval)
            now = loop.time()
            for task, deadline in list(tasks.items()):
                if deadline <= now and task not in timed_out:
                    timed_out.add(task)
                    task.cancel()

    async def heartbeat_loop(self, key: str, status: Callable[[], Mapping[str, Any]]) -> None:
        """A JSON heartbeat with a TTL of three intervals (``health`` and probes read it)."""
        ttl = max(int(self.settings.heartbeat_interval * 3), 2)
        started_at = time.time()
        base = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started_at}
        backoff = Backoff(0.1, 5.0)
        interval = self.settings.heartbeat_interval
        while True:
            beat = {**base, **status(), "at": time.time()}
            try:
                await self.heartbeats.beat(key, json.dumps(beat), ttl)
            except Exception as exc:
                delay = self._failed(backoff, interval)
                self.log.error("heartbeat_failed", error=repr(exc), retry_in=delay)
            else:
                backoff.reset()
                delay = interval
            await anyio.sleep(delay)

    async def trim_loop(self, streams: list[str], stopping: asyncio.Event) -> None:
        """Trim acknowledged entries older than ``retention`` (never pending/undelivered)."""
        retention_ms = int(self.settings.retention * 1000)
        backoff = Backoff(0.1, 5.0)
        interval = self.settings.trim_interval
        while not stopping.is_set():
            delay = interval
            for stream in streams:
                try:
                    await self.bus.safe_trim(stream, retention_ms)
                except Exception as exc:
                    delay = self._failed(backoff, interval)
                    self.log.error("trim_failed", stream=stream, error=repr(exc), retry_in=delay)
                    break
            else:
                backoff.reset()
            await pause(delay, stopping)

    async def consumer_loop(self, streams: list[str], stopping: asyncio.Event) -> None:
        """Remove the group's consumers idle past ``consumer_idle_remove`` that own no pending
        entries (transport/consumers.py), every ``consumer_sweep_interval``; off when
        ``consumer_idle_remove`` is null. Every worker of the type runs it: removal is
        idempotent and each check-and-remove is atomic on the server."""
        idle = self.settings.consumer_idle_remove
        if idle is None:
            return
        backoff = Backoff(0.1, 5.0)
        interval = self.settings.consumer_sweep_interval
        while not stopping.is_set():
            delay = interval
            for stream in streams:
                try:
                    removed = await self.bus.remove_idle_consumers(stream, int(idle * 1000))
                except Exception as exc:
                    delay = self._failed(backoff, interval)
                    self.log.error("consumer_sweep_failed", stream=stream, error=repr(exc))
                    break
                if removed:
                    self.log.info("idle_consumers_removed", stream=stream, consumers=removed)
            else:
                backoff.reset()
            await pause(delay, stopping)

    async def hand_back(self, leases: dict[str, list[bytes]]) -> None:
        """Make entries this worker still holds reclaimable at once by other workers."""
        count = sum(len(ids) for ids in leases.values())
        if not count:
            return
        try:
            await self.bus.hand_back(leases, idle_ms=int(self.settings.reclaim_idle * 1000))
            self.log.info("in_flight_handed_back", count=count)
        except Exception as exc:
            self.log.error("hand_back_failed", error=repr(exc))
