"""The default retry of one LLM call (tenacity) and the call deadline.

Providers run every call through a :class:`CallPolicy`; the default, :class:`DefaultRetry`,
retries transient errors only (:class:`~agent_runtime.errors.LLMUnavailable`, which includes
:class:`~agent_runtime.errors.LLMRateLimited`): 3 attempts, exponential backoff with jitter,
at least the provider's Retry-After, and never a wait that would end past the deadline or a
Retry-After longer than ``max_retry_after`` -- those errors are raised at once so the caller
can redeliver the message later (``Retry(delay=exc.retry_after)``) instead of blocking.
Invalid answers (:class:`~agent_runtime.errors.LLMOutputError`) and refused requests are not
retried here. The resilience policies (docs/policies.md) may pass their own ``CallPolicy``.

The deadline is a context variable so it crosses wrappers (cache, agents) without changing
the provider interface: ``with llm_deadline(seconds): await provider.complete(...)``. It is a
monotonic time in this process; cross-process deadlines are converted by the caller.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base

from agent_runtime.errors import LLMRateLimited, LLMUnavailable

T = TypeVar("T")

_DEADLINE: ContextVar[float | None] = ContextVar("agent_runtime_llm_deadline", default=None)


@contextmanager
def llm_deadline(seconds: float | None) -> Iterator[None]:
    """LLM calls inside this block neither wait nor run past ``seconds`` from now.
    Nested blocks keep the earlier deadline."""
    outer = _DEADLINE.get()
    mine = None if seconds is None else time.monotonic() + seconds
    effective = min((d for d in (outer, mine) if d is not None), default=None)
    token = _DEADLINE.set(effective)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (may be <= 0), or None without one."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


class CallPolicy(Protocol):
    """Runs one provider call, deciding about retries."""

    async def run(self, call: Callable[[], Awaitable[T]]) -> T: ...


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, LLMUnavailable)


class _StopEarly(stop_base):
    """Stop when the next wait would end past the deadline, or the provider asks for a
    longer wait than ``max_retry_after`` (the caller redelivers later instead)."""

    def __init__(self, max_retry_after: float) -> None:
        self.max_retry_after = max_retry_after

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, LLMRateLimited) and (exc.retry_after or 0) > self.max_retry_after:
            return True
        left = remaining()
        return left is not None and state.upcoming_sleep >= left


@dataclass(frozen=True)
class DefaultRetry:
    """tenacity retry of transient LLM errors; see the module docstring."""

    attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 30.0
    log: Any = field(
        default_factory=lambda: structlog.get_logger("agent_runtime.llm"), compare=False
    )

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.attempts), _StopEarly(self.max_retry_after)),
            wait=self._wait,
            retry=retry_if_exception(_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return await retrying(call)

    def _wait(self, state: RetryCallState) -> float:
        delay = min(self.backoff * 2.0 ** (state.attempt_number - 1), self.backoff_max)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, LLMRateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay + random.uniform(0, self.jitter)  # noqa: S311 - jitter, not crypto

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.info(
            "llm_call_retried",
            attempt=state.attempt_number,
            delay=round(state.upcoming_sleep, 3),
            error=type(exc).__name__,
        )
