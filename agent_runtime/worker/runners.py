"""A pool of long-lived handler tasks: how the worker runs handlers without one asyncio task
per message.

A task per message costs a task object, two trips through the event loop (start, done
callback) and a context copy, which is more than a fast handler itself. Here, up to
``concurrency`` runner tasks take messages from one queue. A runner whose handler finishes
without awaiting anything takes the next message in the same event-loop step, so a batch of
fast handlers runs in one step; a runner whose handler awaits I/O parks with it, and a *kick*
(scheduled once per event-loop iteration while messages wait) wakes parked runners or starts
new ones, so slow handlers still overlap up to the concurrency limit.

Each handler runs in a fresh copy of the runner's context (``contextvars``), as it would in
a task of its own: context variables a handler sets never leak into the next message.
Per-handler deadlines: ``running`` maps each busy runner to its handler's deadline (loop
time); the worker's watchdog cancels the runner, and the handler sees ``CancelledError``.

Measured gain (docs/benchmarks.md, "Speed tricks, measured"): 12,444 instructions per message
here against 185,573 for the plain alternative, an anyio task group with a ``CapacityLimiter``
(``benchmarks/tricks/plain_pool.py``), and about half the worker CPU per message in
``benchmarks/single_hop.py``. That is why this module is not the plain version.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Runners that ran handlers without pausing for this long (together, in one event-loop turn)
#: yield to the loop, so reads, commits, leases and heartbeats run even under a stream of
#: CPU-only handlers.
MAX_BURST = 0.02


class _InContext:
    """Await the rest of a started coroutine with each of its steps run in ``context`` (a
    task of its own would do the same). Cancellation passes through unchanged."""

    __slots__ = ("context", "coro", "first")

    def __init__(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context, first: Any
    ) -> None:
        self.coro = coro
        self.context = context
        self.first = first  # what the coroutine's first step yielded (it ran already)

    def __await__(self) -> Generator[Any, Any, None]:
        run, send, throw = self.context.run, self.coro.send, self.coro.throw
        yielded = self.first
        while True:
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # cancellation of the runner: into the handler
                value, error = None, exc
            try:
                yielded = run(send, value) if error is None else run(throw, error)
            except StopIteration:
                return


class HandlerPool(Generic[T]):
    """Runs ``handle(item)`` for every submitted item, at most ``concurrency`` at once.

    ``handle`` must not raise (the worker's handler decides every message's fate itself);
    ``CancelledError`` ends the runner it reached, unless the handler swallows it.
    """

    def __init__(
        self,
        handle: Callable[[T], Coroutine[Any, Any, None]],
        concurrency: int,
        timeout: float,
    ) -> None:
        self._handle = handle
        self._concurrency = concurrency
        self._timeout = timeout
        self._queue: deque[T] = deque()
        self._parked: list[asyncio.Future[None]] = []
        self._runners: set[asyncio.Task[None]] = set()
        self._kick_pending = False
        self._closing = False
        self._yielding = False  # the budget of this loop turn is spent
        self._turn_started = time.monotonic()
        self._burst = 1
        #: busy runner -> loop-time deadline of the handler it runs (the watchdog reads it)
        self.running: dict[asyncio.Task[None], float] = {}
        #: runners the watchdog cancelled; the handler clears its runner when it sees it
        self.timed_out: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        """Messages submitted and not yet finished (queued + running)."""
        return len(self._queue) + len(self.running)

    def submit(self, item: T) -> None:
        self._queue.append(item)
        self.idle.clear()
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._kick)

    def _kick(self) -> None:
        """Give waiting messages runners: wake parked ones or start new ones. Runs after the
        runners woken by the previous kick had their step; while messages still wait (the
        runners paused in I/O), the next kick wakes twice as many."""
        self._kick_pending = False
        if self._closing:
            return
        if not self._yielding:  # called from the loop: a new turn (at most 2 budgets a turn)
            self._turn_started = time.monotonic()
        waiting = len(self._queue)
        if not waiting:
            self._burst = 1
            return
        woken = 0
        for _ in range(min(waiting, self._burst)):
            if self._parked:
                self._parked.pop().set_result(None)
            elif len(self._runners) < self._concurrency:
                task = asyncio.get_running_loop().create_task(self._run())
                self._runners.add(task)
                task.add_done_callback(self._runner_ended)
            else:
                break
            woken += 1
        if not woken:  # every runner is busy: each takes the next message when it is done
            self._burst = 1
            return
        self._burst = min(self._burst * 2, self._concurrency)
        self._kick_pending = True
        asyncio.get_running_loop().call_soon(self._kick)

    def _runner_ended(self, task: asyncio.Task[None]) -> None:
        """A runner ended (its handler let a cancellation through): messages that wait get
        another runner, unless the pool is closing."""
        self._runners.discard(task)
        if self._queue and not self._closing and not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._kick)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        queue, running, timed_out = self._queue, self.running, self.timed_out
        while True:
            if not queue:
                parked = loop.create_future()
                self._parked.append(parked)
                try:
                    await parked
                except BaseException:
                    if parked in self._parked:
                        self._parked.remove(parked)
                    raise
                continue
            if self._yielding or time.monotonic() - self._turn_started > MAX_BURST:
                await self._yield_turn()
                continue
            item = queue.popleft()
            running[me] = loop.time() + self._timeout
            try:
                # First step inline: a handler that never awaits costs no trampoline at all.
                coro, context = self._handle(item), contextvars.copy_context()
                try:
                    first = context.run(coro.send, None)
                except StopIteration:
                    pass
                else:
                    await _InContext(coro, context, first)
            finally:
                del running[me]
                timed_out.discard(me)
                if not running and not queue:
                    self.idle.set()
            if me.cancelling():  # the handler swallowed a cancellation meant for it: the
                raise asyncio.CancelledError  # runner ends, as a task of its own would have

    async def _yield_turn(self) -> None:
        """The runners' CPU-only stretch in this event-loop turn used its budget: every runner
        waits for the next turn (I/O and other tasks run in between), where one of them starts
        a fresh budget. The budget is the pool's, not each runner's, so a turn holds at most
        about one budget of handlers however many runners are busy."""
        if not self._yielding:
            self._yielding = True
            asyncio.get_running_loop().call_soon(self._new_turn)
        await asyncio.sleep(0)

    def _new_turn(self) -> None:
        self._yielding = False
        self._turn_started = time.monotonic()

    def drop_queued(self) -> list[T]:
        """Take back what no runner started (on stop: it is handed back, not handled)."""
        items = list(self._queue)
        self._queue.clear()
        if not self.running:
            self.idle.set()
        return items

    async def cancel_running(self) -> None:
        """Cancel the handlers that run (their runners end) and wait for them."""
        busy = list(self.running)
        for task in busy:
            task.cancel()
        if busy:
            await asyncio.gather(*busy, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every runner, busy or parked, and wait for them."""
        self._closing = True
        self.drop_queued()
        runners = list(self._runners)
        for task in runners:
            task.cancel()
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
