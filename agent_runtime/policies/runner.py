"""``Policy``: timeout + retry + circuit breaker around one awaitable operation.

    policy = policies.call("tool.http")            # or policies.handler
    stats = CallStats()
    body = await policy.run(fetch, url, stats=stats)   # stats.attempts -> StepResult.attempts

Layers, outside in: total timeout (anyio cancel scope, capped by the message deadline) ->
retry (tenacity ``AsyncRetrying``: attempts, exponential backoff with jitter, at least the
error's ``retry_after``, never a sleep or an attempt past the deadline or the total timeout)
-> circuit breaker (shared in Redis) -> per-attempt timeout (anyio cancel scope) -> the call.
A timeout cancels the call for real: nothing of it keeps running (code that starts threads
or processes must stop them on cancellation, as ``anyio.run_process`` does).

Raised to the caller: the last error once retries are exhausted (tagged so an enclosing
policy does not retry it again), ``TimeoutError`` for the total timeout,
:class:`~agent_runtime.errors.DeadlineExceeded` when the message deadline cut the work,
:class:`~agent_runtime.errors.BreakerOpen` at once when the breaker refuses (never retried
here: the worker delays the message instead of burning its delivery count).
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_any, stop_base

from agent_runtime.errors import BreakerOpen, DeadlineExceeded, HandlerControl
from agent_runtime.policies.breaker import SharedBreaker
from agent_runtime.policies.clock import current_scope, remaining
from agent_runtime.policies.config import PolicySpec
from agent_runtime.policies.errors import Matcher, is_exhausted, mark_exhausted

T = TypeVar("T")

#: Errors that are no failure of the work itself: a refusal, a deadline, a control signal.
_REFUSALS = (BreakerOpen, DeadlineExceeded, HandlerControl)


@dataclass(slots=True)
class CallStats:
    """Filled in by :meth:`Policy.run`, also when it raises."""

    attempts: int = 0  # attempts started (breaker refusals included)
    failures: int = 0  # attempts that ran and failed
    probe: bool = False  # an attempt was the breaker's half-open probe
    seconds: float = 0.0


class Policy:
    """A named policy. Stateless per call (share one instance between tasks)."""

    def __init__(
        self,
        name: str,
        spec: PolicySpec,
        *,
        retryable: Matcher,
        breaker: SharedBreaker | None = None,
        log: Any = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.retryable = retryable
        self.breaker = breaker
        self.log = log or structlog.get_logger("agent_runtime.policies").bind(policy=name)

    async def run(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        stats: CallStats | None = None,
        **kwargs: Any,
    ) -> T:
        """``await fn(*args, **kwargs)`` under this policy (``stats`` is reserved)."""
        stats = stats if stats is not None else CallStats()
        call = functools.partial(fn, *args, **kwargs)
        budget, by_deadline = self._budget()
        if budget is not None and budget <= 0:
            raise DeadlineExceeded(f"{self.name}: no time left before the deadline")
        ends = None if budget is None else time.monotonic() + budget
        started = time.monotonic()
        try:
            with _fail_after(budget) as scope:
                if self.spec.retry.attempts == 1:  # nothing to retry: the lean path
                    return await self._attempt(call, stats)
                return await self._retrying(ends)(self._attempt, call, stats)
        except TimeoutError as exc:
            if by_deadline and scope is not None and scope.cancelled_caught:
                raise DeadlineExceeded(f"{self.name}: the deadline passed") from exc
            raise
        except Exception as exc:
            if self.retryable(exc) and stats.attempts > 1:
                mark_exhausted(exc)
            raise
        finally:
            stats.seconds = time.monotonic() - started

    def _budget(self) -> tuple[float | None, bool]:
        """Seconds for the whole run, and whether the deadline (not ``total``) sets them."""
        total, left = self.spec.timeout.total, remaining()
        if left is None:
            return total, False
        if total is None or left < total:
            return left, True
        return total, False

    def _retrying(self, ends: float | None) -> AsyncRetrying:
        retry = self.spec.retry
        return AsyncRetrying(
            stop=stop_any(stop_after_attempt(retry.attempts), _TooLate(ends, retry.backoff_max)),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=anyio.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _should_retry(self, exc: BaseException) -> bool:
        return self.retryable(exc) and not is_exhausted(exc)

    def _wait(self, state: RetryCallState) -> float:
        retry = self.spec.retry
        delay = min(retry.backoff * 2.0 ** (state.attempt_number - 1), retry.backoff_max)
        delay += random.uniform(0, retry.jitter)  # noqa: S311 - jitter, not crypto
        after = _retry_after(state.outcome.exception() if state.outcome else None)
        return max(delay, after) if after is not None else delay

    async def _attempt(self, call: Callable[[], Awaitable[T]], stats: CallStats) -> T:
        stats.attempts += 1
        timed = functools.partial(self._timed, call)
        try:
            if self.breaker is None:
                return await timed()
            return await self.breaker.call(timed, on_probe=lambda: _set_probe(stats))
        except Exception as exc:
            if not isinstance(exc, _REFUSALS):
                stats.failures += 1
                scope = current_scope()
                if scope is not None:
                    scope.failures += 1
            raise

    async def _timed(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.spec.timeout.attempt is None:
            return await call()
        with anyio.fail_after(self.spec.timeout.attempt):
            return await call()

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.info(
            "call_retried",
            attempt=state.attempt_number,
            delay=round(state.upcoming_sleep, 3),
            error=type(exc).__name__,
        )


class _TooLate(stop_base):
    """Stop when the next sleep would end past ``ends`` (deadline or total timeout), or when
    the error's Retry-After is longer than the longest sleep we do in-process."""

    def __init__(self, ends: float | None, longest: float) -> None:
        self.ends = ends
        self.longest = longest

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        after = _retry_after(outcome.exception() if outcome else None)
        if after is not None and after > self.longest:
            return True  # not worth blocking a handler: the worker redelivers later
        return self.ends is not None and time.monotonic() + retry_state.upcoming_sleep >= self.ends


def _set_probe(stats: CallStats) -> None:
    stats.probe = True


def _retry_after(exc: BaseException | None) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _fail_after(seconds: float | None) -> Any:
    """A cancel scope raising TimeoutError after ``seconds``; a no-op (yielding None) without."""
    return contextlib.nullcontext() if seconds is None else anyio.fail_after(seconds)
