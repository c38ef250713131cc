"""Circuit breaker: pybreaker behind an asyncio adapter, with its state shared in Redis (the
scripts and their commands: agent_runtime/transport/breaker_scripts.py).

pybreaker's own async support (``call_async``) is Tornado-only and its Redis storage is
synchronous, so a call goes like this:

1. ``ACQUIRE`` (one Lua script, server clock) reads the fleet-wide state: closed -> call;
   open and the reset timeout not elapsed -> :class:`BreakerOpen` with the seconds left;
   elapsed -> this caller takes the probe lock and the state becomes half-open; half-open with
   the lock held by someone else -> :class:`BreakerOpen` (one prober at a time, fleet-wide).
2. A ``pybreaker.CircuitBreaker`` over a per-call snapshot of that state runs the call with
   ``breaker.calling()`` around the ``await``: pybreaker decides what the outcome counts as
   (errors outside ``failure_on`` mean the dependency answered: success).
3. ``RECORD`` applies the outcome to the shared hash atomically: a failure increments the
   consecutive-failure counter and opens the breaker at ``fail_max`` (counted over every
   worker); the probe's success closes it, its failure re-opens it. A cancelled call (timeout
   of an enclosing scope, shutdown) records nothing and gives the probe lock back.

State changes are logged (``breaker_state_changed``) and passed to listeners with pybreaker's
listener signature ``state_change(breaker, old_state, new_state)`` (states as strings), so
``Metrics.breaker_listener()`` plugs in directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import anyio
import pybreaker
import structlog

from agent_runtime.errors import BreakerOpen
from agent_runtime.policies.config import BreakerPolicy
from agent_runtime.policies.errors import Matcher
from agent_runtime.transport.base import BreakerStore
from agent_runtime.transport.keys import Keys

T = TypeVar("T")


class BreakerListener(Protocol):
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker as stored in Redis (``remaining``: seconds until it may be probed)."""

    name: str
    state: str
    failures: int
    trips: int
    remaining: float


class _Snapshot(pybreaker.CircuitBreakerStorage):
    """pybreaker storage over one call's view of the shared state; remembers what pybreaker
    did so the adapter can apply it to Redis."""

    def __init__(self, name: str, state: str, counter: int) -> None:
        super().__init__(name)
        self._state = state
        self._counter = counter
        self.initial = counter
        self._successes = 0
        self._opened_at: datetime | None = None
        self.failed = False
        self.succeeded = False

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state

    def increment_counter(self) -> None:
        self._counter += 1
        self.failed = True

    def reset_counter(self) -> None:
        if not self.failed:  # pybreaker resets on success (and when entering closed)
            self.succeeded = True
        self._counter = 0

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_at = value


class SharedBreaker:
    """One named breaker, shared by every process through ``keys.breaker(name)``."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        store: BreakerStore,
        keys: Keys,
        *,
        counts: Matcher,
        listeners: Sequence[BreakerListener] = (),
        attempt_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.store = store
        self.key = keys.breaker(name)
        self.counts = counts
        self.listeners = list(listeners)
        self.log = structlog.get_logger("agent_runtime.policies").bind(breaker=name)
        probe = policy.probe_timeout or (
            attempt_timeout + 1.0 if attempt_timeout else policy.reset_timeout
        )
        self._probe_ms = max(int(probe * 1000), 1)
        self._reset_ms = max(int(policy.reset_timeout * 1000), 1)
        self._seen: str | None = None  # last state this process saw

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, on_probe: Callable[[], None] | None = None
    ) -> T:
        """Run ``await fn()`` under the breaker; :class:`BreakerOpen` if it is open.
        ``on_probe`` is called when this call is the half-open probe."""
        token = uuid.uuid4().hex
        probe, failures = await self._enter(token)
        if probe and on_probe is not None:
            on_probe()
        snapshot = _Snapshot(self.name, "half-open" if probe else "closed", failures)
        breaker = pybreaker.CircuitBreaker(
            fail_max=self.policy.fail_max,
            reset_timeout=self.policy.reset_timeout,
            exclude=[lambda exc: not self.counts(exc)],
            state_storage=snapshot,
            name=self.name,
            throw_new_error_on_trip=False,
        )
        cancelled: BaseException | None = None
        try:
            with breaker.calling():
                try:
                    return await fn()
                except Exception:
                    raise
                except BaseException as exc:  # cancellation: not an outcome of the dependency
                    cancelled = exc
                    raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._leave(token, probe, snapshot, cancelled)

    async def _enter(self, token: str) -> tuple[bool, int]:
        decision, state, wait_ms, failures = await self.store.acquire(
            self.key, token, self._reset_ms, self._probe_ms
        )
        self._observe(state)
        if decision == "open":
            raise BreakerOpen(self.name, int(wait_ms) / 1000, "open")
        if decision == "busy":  # someone else probes: look again soon, not after its lock
            wait = min(int(wait_ms) / 1000, max(self.policy.reset_timeout / 10, 0.05))
            raise BreakerOpen(self.name, wait, "half-open")
        return decision == "probe", failures

    async def _leave(
        self, token: str, probe: bool, snapshot: _Snapshot, cancelled: BaseException | None
    ) -> None:
        if cancelled is not None or not (snapshot.failed or snapshot.succeeded):
            if probe:
                await self.store.release(self.key, token)
            return
        outcome = "failure" if snapshot.failed else "success"
        if outcome == "success" and not probe and snapshot.initial == 0:
            return  # healthy path: nothing to reset, no write
        after = await self.store.record(
            self.key, token, outcome, self.policy.fail_max, self._reset_ms
        )
        self._observe(after)

    def _observe(self, state: str) -> None:
        """Log and notify when this process sees the shared state change."""
        old, self._seen = self._seen, state
        if old == state or (old is None and state == "closed"):
            return
        log = self.log.warning if state == "open" else self.log.info
        log("breaker_state_changed", old_state=old or "closed", new_state=state)
        for listener in self.listeners:
            try:
                listener.state_change(self, old or "closed", state)
            except Exception as exc:  # a listener never breaks a call
                self.log.error("breaker_listener_failed", error=repr(exc))

    async def state(self) -> BreakerState:
        """The shared state now (server clock), for status views and tests."""
        data, now_ms = await self.store.read(self.key)
        state = data.get("state", "closed")
        left = 0.0
        if state == "open":
            left = max(int(data.get("opened_at_ms", 0)) + self._reset_ms - now_ms, 0) / 1000
        return BreakerState(
            self.name, state, int(data.get("failures", 0)), int(data.get("trips", 0)), left
        )
