"""What happens to a message whose handler did not return normally: one pure function.

:func:`fate_of` takes the error, the delivery's attempt number and the worker's retry
settings and returns a :class:`Fate`: retry after a delay (counted as a delivery or not) or
dead-letter with a reason code, and the ``request.failed`` status the requester then gets.
No I/O; tested as a table (tests/unit/test_fate.py).

====================================  ===============================  =====================
error                                 fate                             requester gets
====================================  ===============================  =====================
``Reject(code=...)``                  dead letter ``code``             ``rejected`` (or
                                                                       ``timeout`` for
                                                                       ``expired``)
``Retry(delay, count)``               retry after ``delay`` (backoff   nothing yet
                                      when None), counted if ``count``
permanent (``policies.errors``)       dead letter ``permanent_error``  ``failed``
infrastructure (Redis down, OOM, ..)  retry, not counted               nothing yet
transient, below the delivery cap     retry after backoff, counted     nothing yet
transient, at the delivery cap        dead letter ``max_deliveries``   ``failed``
====================================  ===============================  =====================
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.errors import Reject, Retry
from agent_runtime.policies.errors import classify
from protocols.core import FailureStatus

#: Dead-letter reasons whose requester is told ``status="rejected"`` / ``"timeout"``.
TIMEOUT_REASONS = frozenset({"expired", "no_consumer"})


@dataclass(frozen=True, slots=True)
class Fate:
    """``action`` is ``retry`` or ``dead``. For ``retry``: ``delay`` seconds, ``counted``
    (the redelivery counts toward ``max_deliveries``). For ``dead``: ``reason`` (a code) and
    ``status`` (what ``request.failed`` says). ``error`` is the text for logs and the DLQ."""

    action: str
    error: str
    delay: float = 0.0
    counted: bool = True
    reason: str = ""
    status: FailureStatus = "failed"


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_of(reason: str) -> FailureStatus:
    """The ``request.failed`` status of a dead letter with ``reason``."""
    if reason in TIMEOUT_REASONS:
        return "timeout"
    if reason in {"max_deliveries", "permanent_error"} or reason.startswith("commit_"):
        return "failed"
    if reason in {"undecodable", "invalid", "oversize", "unknown_type", "unknown_version"}:
        return "failed"
    return "rejected"


def backoff(attempt: int, base: float, cap: float) -> float:
    """Delay before retry ``attempt`` (1-based): ``base`` doubling, at most ``cap``."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap))


def fate_of(
    exc: BaseException,
    attempt: int,
    *,
    max_deliveries: int,
    retry_backoff: float,
    retry_backoff_max: float,
    permanent: tuple[type[BaseException], ...] = (),
) -> Fate:
    """The fate of a delivery (``attempt`` = its delivery count) whose handler raised ``exc``."""
    error = describe(exc)
    if isinstance(exc, Reject):
        return Fate("dead", exc.reason, reason=exc.code, status=status_of(exc.code))
    if isinstance(exc, Retry):
        delay = exc.delay
        if delay is None:
            delay = backoff(attempt, retry_backoff, retry_backoff_max)
        return _retry(error, delay, exc.count, attempt, max_deliveries)
    kind = classify(exc, permanent)
    if kind == "permanent":
        return Fate("dead", error, reason="permanent_error", status="failed")
    delay = backoff(attempt, retry_backoff, retry_backoff_max)
    return _retry(error, delay, kind == "transient", attempt, max_deliveries)


def _retry(error: str, delay: float, counted: bool, attempt: int, cap: int) -> Fate:
    if counted and attempt >= cap:
        text = f"failed {attempt} deliveries; last error: {error}"
        return Fate("dead", text, reason="max_deliveries", status="failed")
    return Fate("retry", error, delay=delay, counted=counted)
