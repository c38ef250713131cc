"""What happens to a delivery: one pure function, :func:`fate_of`, every decision goes through.

Inputs: the error (None for the checks before handling), the attempt (the entry's delivery
count), the seconds left before the message deadline on the Redis clock (None: no deadline;
<= 0: passed), the message's age on the Redis clock (now minus its timestamp; negative: from
the future; None: not checked), whether the handler policy saw this delivery's work really
fail (None: no handler policy ran), and the worker's :class:`Rules`. Output: a
:class:`Fate` -- handle it, ack, retry after a delay (counted as a delivery or not), or
dead-letter with a reason code and the ``request.failed`` status its requester is then
told. No I/O; tested as a table (tests/unit/test_fate.py). The worker (loop.py) carries the
fate out; the dead-letter builder (dead_letters.py) writes the failure reply with the fate's
status.

Before handling (``error`` None):

=========================================  ================================  ===========
check                                      fate                              requester
=========================================  ================================  ===========
delivery count above ``max_deliveries``    dead ``max_deliveries``           ``failed``
timestamp over ``clock_skew`` ahead         dead ``clock_skew``               ``rejected``
age above ``max_age``                      dead ``stale``                    ``rejected``
deadline passed (``left <= 0``)            dead ``expired``                  ``timeout``
``hops`` above ``AgentMessage.MAX_HOPS``   dead ``too_many_hops``            ``rejected``
addressed to another agent                 dead ``misrouted``                ``rejected``
otherwise                                  handle it                         --
=========================================  ================================  ===========

After a handler raised (first match wins):

=========================================  ================================  ===========
error                                      fate                              requester
=========================================  ================================  ===========
``DecodeError`` (intake)                   dead, its own reason code         by reason
``Skip``                                   ack, no outputs                   --
``Reject(code=...)``                       dead ``code``                     by code
``Retry(delay, count)``                    retry after ``delay`` (backoff    --
                                           when None), counted if ``count``
``BreakerOpen`` seen by the handler        dead ``expired`` if it stays      ``timeout``
policy (``failed`` not None)               open past the deadline, else
                                           retry when it may be probed,
                                           counted only if ``failed``
``DeadlineExceeded``, or ``left <= 0``     dead ``expired``                  ``timeout``
``retry_after`` > 0 (rate limits)          retry after ``retry_after``,      --
                                           counted
permanent (``policies.errors.classify``)   dead ``permanent_error``          ``failed``
infrastructure (Redis down, OOM, ...)      retry after backoff, not counted  --
transient, timeouts included (a handler    retry after backoff, counted      --
step timeout is never final at once)
a counted retry at ``max_deliveries``      dead ``max_deliveries``           ``failed``
=========================================  ================================  ===========
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timezone, tzinfo
from typing import Any

from pydantic_core import TzInfo

from agent_runtime.errors import BreakerOpen, DeadlineExceeded, DecodeError, Reject, Retry, Skip
from agent_runtime.policies.errors import classify
from protocols.core import FailureStatus
from protocols.envelope import AgentMessage

#: Dead-letter reasons whose requester is told ``status="timeout"``.
TIMEOUT_REASONS = frozenset({"expired", "no_consumer"})


@dataclass(frozen=True, slots=True)
class Rules:
    """The worker's settings that decide fates (one per worker, from WorkerSettings)."""

    agent: str
    max_deliveries: int
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    permanent: tuple[type[BaseException], ...] = ()  # the agent's own permanent error types
    max_age: float = float("inf")  # seconds a message may be old (its timestamp)
    clock_skew: float = float("inf")  # seconds its timestamp may lie ahead

    @classmethod
    def of(cls, agent: str, settings: Any, permanent: Iterable[type[BaseException]]) -> Rules:
        """The rules of ``agent``'s worker (``settings``: its WorkerSettings)."""
        return cls(
            agent,
            settings.max_deliveries,
            settings.retry_backoff,
            settings.retry_backoff_max,
            tuple(permanent),
            settings.freshness,
            settings.clock_skew,
        )


@dataclass(frozen=True, slots=True)
class Fate:
    """``action``: ``handle`` (checks before handling passed), ``ack`` (no outputs; Skip),
    ``retry`` (after ``delay`` seconds plus up to ``jitter`` at random, ``counted`` toward
    ``max_deliveries``) or ``dead`` (``reason`` a code, ``status`` what ``request.failed``
    says). ``error`` is the text for logs and the dead-letter stream."""

    action: str
    error: str = ""
    delay: float = 0.0
    counted: bool = True
    reason: str = ""
    status: FailureStatus = "failed"
    jitter: float = 0.0


HANDLE = Fate("handle")


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_of(reason: str) -> FailureStatus:
    """The ``request.failed`` status of a dead letter with ``reason``."""
    if reason in TIMEOUT_REASONS:
        return "timeout"
    if reason in {"max_deliveries", "permanent_error", "unwritable_output"}:
        return "failed"
    if reason.startswith("commit_"):
        return "failed"
    if reason in {"undecodable", "invalid", "oversize", "unknown_type", "unknown_version"}:
        return "failed"
    return "rejected"


def backoff(attempt: int, base: float, cap: float) -> float:
    """Delay before retry ``attempt`` (1-based): ``base`` doubling, at most ``cap``."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap))


def fate_of(
    error: BaseException | None,
    attempt: int,
    rules: Rules,
    *,
    left: float | None = None,
    failed: bool | None = None,
    hops: int = 0,
    to_agent: str = "",
    age: float | None = None,
) -> Fate:
    """The fate of a delivery (``attempt`` = its delivery count); see the module's tables.
    ``hops``, ``to_agent`` and ``age`` are the envelope's, for the checks before handling."""
    if error is None:
        return before_handling(attempt, rules, left, hops, to_agent, age)
    if isinstance(error, DecodeError):
        return _dead(error.detail, error.reason)
    if isinstance(error, Skip):
        return Fate("ack", describe(error))
    if isinstance(error, Reject):
        return _dead(error.reason, error.code)
    if isinstance(error, Retry):
        delay = error.delay
        if delay is None:
            delay = backoff(attempt, rules.retry_backoff, rules.retry_backoff_max)
        return _retry(describe(error), delay, error.count, attempt, rules)
    if isinstance(error, BreakerOpen) and failed is not None:
        return _breaker_open(error, attempt, rules, left, failed)
    if isinstance(error, DeadlineExceeded):
        return _dead(str(error) or "deadline exceeded", "expired")
    if left is not None and left <= 0:
        return _dead(f"deadline passed while handling ({type(error).__name__})", "expired")
    after = getattr(error, "retry_after", None)
    if isinstance(after, int | float) and after > 0:
        text = f"{type(error).__name__}: retry after {after}s"
        return _retry(text, float(after), True, attempt, rules)
    kind = classify(error, rules.permanent)
    if kind == "permanent":
        return _dead(describe(error), "permanent_error")
    delay = backoff(attempt, rules.retry_backoff, rules.retry_backoff_max)
    return _retry(describe(error), delay, kind == "transient", attempt, rules)


def before_handling(
    attempt: int, rules: Rules, left: float | None, hops: int, to_agent: str, age: float | None
) -> Fate:
    """``fate_of(None, ...)`` with positional arguments, for the worker's intake: one test
    lets a message that passes every check through (the common case; NaN fails it), any
    other goes through the checks in the table's order."""
    if (
        attempt <= rules.max_deliveries
        and (age is None or -rules.clock_skew <= age <= rules.max_age)
        and (left is None or left > 0)
        and hops <= AgentMessage.MAX_HOPS
        and (not to_agent or to_agent == rules.agent)
    ):
        return HANDLE
    return _freshness(age, rules) or _before(attempt, rules, left, hops, to_agent)


#: Fixed-offset time zone types: an instant's offset does not depend on the instant.
_FIXED_OFFSET = (TzInfo, timezone)  # pydantic-core's (every decoded envelope's), datetime's
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCHS: dict[tzinfo, datetime] = {}  # the epoch in each fixed-offset zone met (few: bounded)
_MAX_ZONES = 64


def epoch_seconds(moment: datetime) -> float:
    """``moment.timestamp()`` (an aware datetime), computed without a ``utcoffset`` call for
    the fixed-offset zones of decoded envelopes: the difference of two datetimes of one
    ``tzinfo`` object is exact wall-clock arithmetic in C, and pydantic-core hands every
    envelope of one offset the same ``TzInfo``. Measured under callgrind: 6,050 -> 3,400
    instructions per call (docs/benchmarks.md "Issue 17: intake (session 8)"); the
    worker takes the timestamp and the deadline of every message read."""
    zone = moment.tzinfo
    if type(zone) not in _FIXED_OFFSET:  # a zone with its own rules (or unhashable): as is
        return moment.timestamp()
    assert zone is not None
    epoch = _EPOCHS.get(zone)
    if epoch is None:
        if len(_EPOCHS) >= _MAX_ZONES:
            return moment.timestamp()
        epoch = _EPOCHS[zone] = _EPOCH.astimezone(zone)
    return (moment - epoch).total_seconds()


def _before(attempt: int, rules: Rules, left: float | None, hops: int, to_agent: str) -> Fate:
    cap = rules.max_deliveries
    if attempt > cap:
        text = f"delivered {attempt} times (cap {cap}); its handler may crash the worker"
        return _dead(text, "max_deliveries")
    if left is not None and left <= 0:
        return _dead(f"deadline passed {-left:.3f}s before handling", "expired")
    if hops > AgentMessage.MAX_HOPS:
        return _dead(f"{hops} hops (cap {AgentMessage.MAX_HOPS})", "too_many_hops")
    if to_agent and to_agent != rules.agent:
        return _dead(f"addressed to {to_agent!r}, read by {rules.agent!r}", "misrouted")
    return HANDLE


def _freshness(age: float | None, rules: Rules) -> Fate | None:
    """Dead ``clock_skew`` / ``stale`` for a timestamp too far ahead / too old, else None.
    Permanent: a replay or a forged time does not get better by waiting."""
    if age is None:
        return None
    if age != age:  # NaN: an unusable timestamp is not fresh
        return _dead("timestamp cannot be placed on the server's clock", "stale")
    if -age > rules.clock_skew:
        text = (
            f"timestamp {-age:.0f}s ahead of the server's clock (tolerance {rules.clock_skew:g}s)"
        )
        return _dead(text, "clock_skew")
    if age > rules.max_age:
        return _dead(f"message is {age:.0f}s old (max_age {rules.max_age:g}s)", "stale")
    return None


def _breaker_open(
    error: BreakerOpen, attempt: int, rules: Rules, left: float | None, failed: bool
) -> Fate:
    """An open breaker refused the work: wait until it may be probed, counted as a delivery
    only if the work really failed in this one (a message that only waited is never burned,
    a poison message that trips the breaker still reaches the cap)."""
    if left is not None and left <= error.remaining:
        text = f"circuit breaker {error.name!r} stays {error.state} past the deadline"
        return _dead(text, "expired")
    text = f"breaker_open: {error.name} is {error.state}"
    jitter = min(error.remaining * 0.1, 0.5)
    return _retry(text, error.remaining, failed, attempt, rules, jitter)


def _dead(text: str, reason: str) -> Fate:
    return Fate("dead", text, reason=reason, status=status_of(reason))


def _retry(
    text: str, delay: float, counted: bool, attempt: int, rules: Rules, jitter: float = 0.0
) -> Fate:
    if counted and attempt >= rules.max_deliveries:
        return _dead(f"failed {attempt} deliveries; last error: {text}", "max_deliveries")
    return Fate("retry", text, delay=delay, counted=counted, jitter=jitter)
