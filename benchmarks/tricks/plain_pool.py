"""The plain handler pool: one task per message in an anyio task group, at most
``concurrency`` handlers at once by an anyio ``CapacityLimiter``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

T = TypeVar("T")

MAX_BURST = 0.02  # unused: every handler is a task of its own, the loop interleaves them


class _Job(Generic[T]):
    __slots__ = ("dropped", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.dropped = False


class HandlerPool(Generic[T]):
    """Runs ``handle(item)`` for every submitted item, each in a task of its own (so in its
    own context), at most ``concurrency`` at once; the others wait for the limiter in
    submission order and count as queued (``drop_queued`` hands them back)."""

    def __init__(
        self,
        handle: Callable[[T], Coroutine[Any, Any, None]],
        concurrency: int,
        timeout: float,
    ) -> None:
        self._handle = handle
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._queued: dict[_Job[T], None] = {}  # submitted, waiting for the limiter (ordered)
        self._tg: TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._closing = False
        #: busy handler task -> loop-time deadline (the watchdog reads it)
        self.running: dict[asyncio.Task[Any], float] = {}
        #: tasks the watchdog cancelled; the handler clears its task when it sees it
        self.timed_out: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self._queued) + len(self.running)

    def submit(self, item: T) -> None:
        job = _Job(item)
        self._queued[job] = None
        self.idle.clear()
        if self._tg is not None:
            self._tg.start_soon(self._run_one, job)
        elif self._host is None and not self._closing:
            self._host = asyncio.get_running_loop().create_task(self._hold_group())

    async def _hold_group(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for job in list(self._queued):  # submitted before the group was open
                tg.start_soon(self._run_one, job)
            await anyio.sleep_forever()

    async def _run_one(self, job: _Job[T]) -> None:
        async with self._limiter:
            if job.dropped:
                return
            del self._queued[job]
            me = asyncio.current_task()
            assert me is not None
            self.running[me] = asyncio.get_running_loop().time() + self._timeout
            try:
                await self._handle(job.item)
            except asyncio.CancelledError:
                pass  # this handler's task ends (a native cancel must not cancel the group)
            finally:
                del self.running[me]
                self.timed_out.discard(me)
                if not self.running and not self._queued:
                    self.idle.set()

    def drop_queued(self) -> list[T]:
        jobs = list(self._queued)
        self._queued.clear()
        for job in jobs:
            job.dropped = True
        if not self.running:
            self.idle.set()
        return [job.item for job in jobs]

    async def cancel_running(self) -> None:
        busy = list(self.running)
        for task in busy:
            task.cancel()
        if busy:
            await asyncio.gather(*busy, return_exceptions=True)

    async def close(self) -> None:
        self._closing = True
        self.drop_queued()
        host, self._host, self._tg = self._host, None, None
        if host is not None:
            host.cancel()
            await asyncio.gather(host, return_exceptions=True)
