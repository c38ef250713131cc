"""``HandlerPool`` (agent_runtime/worker/runners.py) without a server: every item handled once
and in order, the concurrency bound, overlapping slow handlers, context isolation, watchdog-style
cancellation of one handler, ``drop_queued``/``cancel_running``/``close``, and the event loop
getting its turn under a stream of CPU-only handlers.

Coordination is by events only; the waits' timeouts are safety nets, never the synchronisation.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any, TypeVar

import pytest

from agent_runtime.worker.runners import MAX_BURST, HandlerPool

pytestmark = pytest.mark.anyio

T = TypeVar("T")

SAFETY_NET = 5.0  # seconds: only reached when the behaviour under test is broken
TIMEOUT = 30.0  # the pool's per-handler timeout (only the deadlines in ``running`` use it)
SPIN = 0.001  # seconds of CPU per CPU-only handler

VAR: contextvars.ContextVar[int | None] = contextvars.ContextVar("test_runners_var", default=None)


async def settle(awaitable: Awaitable[Any], what: str) -> None:
    """Await ``awaitable``; fail the test (rather than hang) if it does not finish."""
    try:
        await asyncio.wait_for(awaitable, SAFETY_NET)
    except TimeoutError:
        pytest.fail(f"timed out after {SAFETY_NET}s waiting for {what}")


@asynccontextmanager
async def open_pool(
    handle: Callable[[T], Coroutine[Any, Any, None]], concurrency: int
) -> AsyncIterator[HandlerPool[T]]:
    """A pool that is closed at the end, also when the test fails with handlers blocked."""
    pool = HandlerPool(handle, concurrency, TIMEOUT)
    try:
        yield pool
    finally:
        await pool.close()


def spin(seconds: float) -> None:
    """Burn CPU without giving the event loop a turn."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Blocking:
    """A handler that blocks every item until its gate opens: ``gate`` (shared) or, when
    ``gates`` is given, one event per item. Records what started, finished and was cancelled
    (the ``CancelledError`` is re-raised), and how many handlers ran at once."""

    def __init__(self, gates: Mapping[int, asyncio.Event] | None = None) -> None:
        self.gate = asyncio.Event()
        self._gates = gates
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.now = 0
        self.peak = 0
        self._changed = asyncio.Event()

    async def __call__(self, item: int) -> None:
        self.started.append(item)
        self.now += 1
        self.peak = max(self.peak, self.now)
        self._changed.set()
        gate = self.gate if self._gates is None else self._gates[item]
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.now -= 1
            self._changed.set()
        self.finished.append(item)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever a handler starts or ends."""

        async def check() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await settle(check(), what)


# --- order, bound, overlap ---------------------------------------------------------------------


async def test_every_item_is_handled_once_in_submission_order() -> None:
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)

    async with open_pool(handle, concurrency=4) as pool:
        for item in range(1000):
            pool.submit(item)
        assert len(pool) == 1000
        assert not pool.idle.is_set()
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handled == list(range(1000))
        assert len(pool) == 0


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_at_most_concurrency_handlers_run_at_once(concurrency: int) -> None:
    handler = Blocking()
    async with open_pool(handler, concurrency) as pool:
        loop = asyncio.get_running_loop()
        submitted_at = loop.time()
        items = list(range(3 * concurrency))
        for item in items:
            pool.submit(item)
        await handler.until(lambda: handler.now == concurrency, f"{concurrency} running handlers")

        assert handler.started == items[:concurrency]  # the oldest items, in order
        assert len(pool.running) == concurrency
        assert len(pool) == len(items)  # queued + running
        assert not pool.idle.is_set()
        for deadline in pool.running.values():  # what the watchdog reads
            assert submitted_at + TIMEOUT <= deadline <= loop.time() + TIMEOUT

        handler.gate.set()
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handler.peak == concurrency
        assert sorted(handler.finished) == items
        assert len(pool) == 0
        assert not pool.running


async def test_slow_handlers_overlap_up_to_the_limit() -> None:
    gates = {item: asyncio.Event() for item in range(8)}
    handler = Blocking(gates)
    async with open_pool(handler, concurrency=8) as pool:
        for item in gates:
            pool.submit(item)
        # nothing is released before all eight run: the kicks must start eight runners
        await handler.until(lambda: handler.now == 8, "8 handlers running at once")
        assert len(pool.running) == 8

        for item in reversed(gates):  # each handler ends when its own gate opens
            gates[item].set()
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handler.finished == list(reversed(gates))


# --- context isolation -------------------------------------------------------------------------


async def test_context_variables_a_handler_sets_do_not_leak_into_the_next_item() -> None:
    seen: list[int | None] = []  # VAR as each handler found it
    kept: list[bool] = []  # VAR still the handler's own value after it awaited
    runners: set[asyncio.Task[Any] | None] = set()

    async def handle(item: int) -> None:
        seen.append(VAR.get())
        runners.add(asyncio.current_task())
        VAR.set(item)
        if item % 2:  # half of them pause, so the value must survive the handler's own steps
            await asyncio.sleep(0)
        kept.append(VAR.get() == item)

    async with open_pool(handle, concurrency=1) as pool:
        for item in range(20):
            pool.submit(item)
        await settle(pool.idle.wait(), "the pool to go idle")

    assert len(runners) == 1  # one runner task ran every handler
    assert seen == [None] * 20
    assert all(kept)
    assert VAR.get() is None


# --- cancellation of one handler (the worker's watchdog) ---------------------------------------


async def wait_on_a_future_forever() -> None:
    await asyncio.Event().wait()


async def yield_forever() -> None:
    while True:
        await asyncio.sleep(0)  # a bare yield: the cancellation arrives with no future to cancel


@pytest.mark.parametrize("pause", [wait_on_a_future_forever, yield_forever])
async def test_a_timed_out_handler_that_swallows_the_cancellation_keeps_its_runner(
    pause: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """What the worker does on a handler timeout: the watchdog adds the busy runner to
    ``timed_out`` and cancels it; the handler, wherever it is paused, gets ``CancelledError``,
    uncancels its task and returns. The runner goes on with the next items."""
    started = asyncio.Event()
    outcome: dict[str, object] = {}
    runner_of: dict[str, asyncio.Task[Any] | None] = {}

    async def handle(item: str) -> None:
        task = asyncio.current_task()
        runner_of[item] = task
        if item != "slow":
            outcome[item] = "done"
            return
        started.set()
        try:
            await pause()  # only a cancellation ends this
        except asyncio.CancelledError:
            assert task is not None
            outcome[item] = ("cancelled", task in pool.timed_out)
            task.uncancel()

    async with open_pool(handle, concurrency=1) as pool:
        pool.submit("slow")
        await settle(started.wait(), "the slow handler to start")
        pool.submit("next")
        pool.submit("last")
        (runner,) = pool.running
        pool.timed_out.add(runner)
        runner.cancel()

        await settle(pool.idle.wait(), "the pool to go idle")
        assert outcome == {"slow": ("cancelled", True), "next": "done", "last": "done"}
        assert runner_of == {"slow": runner, "next": runner, "last": runner}
        assert not runner.done()
        assert runner.cancelling() == 0
        assert not pool.timed_out  # the pool cleared it when the handler ended
        assert not pool.running


async def test_items_queued_behind_a_runner_that_ends_are_still_handled() -> None:
    """A runner ends when its handler lets ``CancelledError`` through (here: cancelled via
    ``running``). When it was the only runner, the items queued behind it still get one:
    they do not wait for the next ``submit()``, and the pool goes idle."""
    handler = Blocking()
    async with open_pool(handler, concurrency=1) as pool:
        for item in range(3):
            pool.submit(item)
        await handler.until(lambda: handler.now == 1, "the first handler to start")
        (runner,) = pool.running
        handler.gate.set()  # the items behind it do not block
        runner.cancel()

        await settle(pool.idle.wait(), "the queued items to be handled")
        assert handler.cancelled == [0]
        assert handler.finished == [1, 2]


async def test_a_handler_that_swallows_a_cancellation_ends_its_runner_not_the_pool() -> None:
    """A handler that catches ``CancelledError`` and returns without ``uncancel()`` leaves its
    runner marked as cancelled: the runner ends (a later handler must not run in a task with
    a pending cancellation), ``cancel_running`` still returns, and the next item is handled by
    a new runner."""
    entered = asyncio.Event()
    handled: list[int] = []
    runners: list[asyncio.Task[Any] | None] = []

    async def stubborn(item: int) -> None:
        runners.append(asyncio.current_task())
        if item == 0:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # swallowed, no uncancel()
        else:
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        handled.append(item)

    async with open_pool(stubborn, concurrency=1) as pool:
        pool.submit(0)
        await settle(entered.wait(), "the first handler to start")
        await settle(pool.cancel_running(), "cancel_running to return")
        assert runners[0] is not None and runners[0].done()

        pool.submit(1)
        await settle(pool.idle.wait(), "the next item to be handled")
        assert handled == [0, 1]
        assert runners[1] is not runners[0]


# --- drop_queued, cancel_running, close --------------------------------------------------------


async def test_drop_queued_hands_back_the_items_no_runner_started() -> None:
    handler = Blocking()
    async with open_pool(handler, concurrency=2) as pool:
        for item in range(5):
            pool.submit(item)
        await handler.until(lambda: handler.now == 2, "2 running handlers")

        assert pool.drop_queued() == [2, 3, 4]
        assert len(pool) == 2  # the running ones still count
        assert not pool.idle.is_set()

        handler.gate.set()
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handler.finished == [0, 1]
        assert pool.drop_queued() == []


async def test_drop_queued_before_any_runner_started_leaves_the_pool_idle_and_usable() -> None:
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)

    async with open_pool(handle, concurrency=2) as pool:
        for item in range(3):
            pool.submit(item)
        assert pool.drop_queued() == [0, 1, 2]  # before the loop ran the kick
        assert pool.idle.is_set()
        assert len(pool) == 0

        pool.submit(99)
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handled == [99]


async def test_cancel_running_cancels_the_busy_handlers_and_waits_for_them() -> None:
    handler = Blocking()
    async with open_pool(handler, concurrency=3) as pool:
        for item in range(3):
            pool.submit(item)
        await handler.until(lambda: handler.now == 3, "3 running handlers")
        busy = set(pool.running)

        await pool.cancel_running()
        assert sorted(handler.cancelled) == [0, 1, 2]
        assert handler.finished == []
        assert all(task.done() for task in busy)  # waited for, not just asked to stop
        assert not pool.running
        assert pool.idle.is_set()

        handler.gate.set()  # later items get fresh runners
        pool.submit(3)
        await settle(pool.idle.wait(), "the pool to go idle")
        assert handler.finished == [3]


async def test_close_ends_every_runner_busy_or_parked() -> None:
    tasks_before = asyncio.all_tasks()
    gates = {item: asyncio.Event() for item in range(4)}
    handler = Blocking(gates)
    pool = HandlerPool(handler, 4, TIMEOUT)
    try:
        for item in gates:
            pool.submit(item)
        await handler.until(lambda: handler.now == 4, "4 running handlers")
        gates[0].set()
        gates[1].set()  # two runners finish and wait for work; two stay busy
        await handler.until(lambda: len(handler.finished) == 2, "2 handlers to finish")
    finally:
        await pool.close()

    assert sorted(handler.cancelled) == [2, 3]
    assert not pool._runners
    assert not pool.running
    assert len(pool) == 0
    assert asyncio.all_tasks() == tasks_before  # nothing left behind


# --- the event loop under CPU-only handlers ----------------------------------------------------


async def run_cpu_only_stream(concurrency: int, items: int) -> list[int]:
    """Submit ``items`` handlers that each spin for ``SPIN`` seconds; return how many items were
    handled at each turn a competing coroutine got, up to the first turn after the last item."""
    handled = 0

    async def handle(item: int) -> None:
        nonlocal handled
        spin(SPIN)
        handled += 1

    turns: list[int] = []
    async with open_pool(handle, concurrency) as pool:
        for item in range(items):
            pool.submit(item)

        async def other_coroutine() -> None:
            while True:
                turns.append(handled)
                if pool.idle.is_set():
                    return
                await asyncio.sleep(0)

        await settle(asyncio.gather(pool.idle.wait(), other_coroutine()), "the pool to go idle")
        assert handled == items
    return turns


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_cpu_only_handlers_do_not_starve_the_event_loop(concurrency: int) -> None:
    items = 200  # ~0.2 s of CPU, ten times MAX_BURST
    turns = await run_cpu_only_stream(concurrency, items)
    midway = [handled for handled in turns if 0 < handled < items]
    assert len(midway) >= 2, f"the loop got no turn while handlers ran: {midway}"


@pytest.mark.parametrize("concurrency", [1, 8, 32])
async def test_cpu_only_work_per_loop_turn_does_not_grow_with_concurrency(concurrency: int) -> None:
    """``MAX_BURST`` bounds the CPU-only work between two turns of the event loop for the pool
    as a whole: with many runners busy, the loop (reads, commits, leases, heartbeats) still
    gets a turn about every ``MAX_BURST``, not every ``concurrency * MAX_BURST``."""
    per_burst = round(MAX_BURST / SPIN)  # ~20 items of SPIN fit in one burst
    turns = await run_cpu_only_stream(concurrency, items=10 * per_burst)
    between_turns = max(later - earlier for earlier, later in pairwise(turns))
    assert between_turns <= 3 * per_burst, (
        f"{between_turns} CPU-only handlers ({between_turns * SPIN:.3f}s) ran between two turns "
        f"of the event loop; MAX_BURST allows ~{per_burst}"
    )
