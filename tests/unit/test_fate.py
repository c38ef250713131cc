"""The fate of a delivery, as tables: error x attempt x deadline x policy -> handle / ack /
retry / dead letter (with the status its requester is told)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from redis import exceptions as redis_errors

from agent_runtime.errors import (
    BreakerOpen,
    BudgetExceeded,
    ConfigError,
    DeadlineExceeded,
    DecodeError,
    LLMRateLimited,
    LLMRequestError,
    Reject,
    Retry,
    Skip,
)
from agent_runtime.policies.errors import classify
from agent_runtime.worker.fate import (
    HANDLE,
    Fate,
    Rules,
    _before,
    _freshness,
    before_handling,
    epoch_seconds,
    fate_of,
)
from protocols.envelope import AgentMessage


class _Limited(BaseModel):
    model: str = Field(max_length=8)


def _validation_error() -> ValidationError:
    try:
        _Limited(model="x" * 100)
    except ValidationError as exc:
        return exc
    raise AssertionError("no error")


class PluginError(Exception):
    """An agent's own error type that it declares permanent."""


CAP = 5
RULES = Rules("echo", CAP, retry_backoff=0.5, retry_backoff_max=60.0, permanent=(PluginError,))

# (error, attempt, action, reason or delay, counted)
TABLE = [
    (Reject("no tool"), 1, "dead", "rejected", None),
    (Reject("late", code="expired"), 1, "dead", "expired", None),
    (Retry("later", delay=3.0), 1, "retry", 3.0, True),
    (Retry("breaker", delay=2.0, count=False), CAP, "retry", 2.0, False),
    (Retry("counted"), CAP, "dead", "max_deliveries", None),
    (_validation_error(), 1, "dead", "permanent_error", None),
    (ValueError("Port out of range 0-65535"), 1, "dead", "permanent_error", None),
    (ConfigError("no provider"), 1, "dead", "permanent_error", None),
    (LLMRequestError("400 bad request"), 1, "dead", "permanent_error", None),
    (BudgetExceeded(0.01, 0.02), 1, "dead", "permanent_error", None),
    (
        redis_errors.ResponseError("WRONGTYPE Operation against a key"),
        1,
        "dead",
        "permanent_error",
        None,
    ),
    (redis_errors.ResponseError("OOM command not allowed"), CAP, "retry", 8.0, False),
    (redis_errors.BusyLoadingError("LOADING"), CAP, "retry", 8.0, False),
    (redis_errors.ConnectionError("reset"), CAP, "retry", 8.0, False),
    (BreakerOpen("llm", 1.0), 1, "retry", 0.5, True),
    (LLMRateLimited("429"), 1, "retry", 0.5, True),
    (TimeoutError("step"), 2, "retry", 1.0, True),
    (RuntimeError("flaky"), 1, "retry", 0.5, True),
    (RuntimeError("flaky"), 3, "retry", 2.0, True),
    (RuntimeError("flaky"), CAP, "dead", "max_deliveries", None),
    (PluginError("bad input"), 1, "dead", "permanent_error", None),
]


@pytest.mark.parametrize(("exc", "attempt", "action", "detail", "counted"), TABLE)
def test_fate_table(
    exc: BaseException, attempt: int, action: str, detail: object, counted: bool | None
) -> None:
    fate = fate_of(exc, attempt, RULES)
    assert fate.action == action
    if action == "dead":
        assert fate.reason == detail
    else:
        assert fate.delay == detail
        assert fate.counted is counted


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("rejected", "rejected"),
        ("expired", "timeout"),
        ("permanent_error", "failed"),
        ("max_deliveries", "failed"),
        ("policy_denied", "rejected"),
    ],
)
def test_the_requester_is_told_how_it_ended(reason: str, status: str) -> None:
    fate = fate_of(Reject("x", code=reason), 1, Rules("echo", CAP, 1, 1))
    assert fate.status == status


def test_an_explicit_transient_flag_decides() -> None:
    class Flagged(Exception):
        transient = True

    class Refused(Exception):
        transient = False

    assert classify(Flagged()) == "transient"
    assert classify(Refused()) == "permanent"
    assert classify(ValueError()) == "permanent"
    assert classify(redis_errors.ResponseError("TRYAGAIN multiple keys")) == "infrastructure"


def test_redis_errors_as_redis_py_raises_them() -> None:
    """redis-py strips the code of the errors it maps to classes: the class (or the code kept
    in ``status_code``) decides, not the remaining text."""
    from redis._parsers.base import BaseParser

    def parsed(reply: str) -> BaseException:
        return BaseParser.parse_error(reply)  # type: ignore[no-any-return]

    for reply in (
        "OOM command not allowed when used memory > 'maxmemory'.",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down",
        "EXECABORT Transaction discarded because of previous errors.",
        "READONLY You can't write against a read only replica.",
    ):
        assert classify(parsed(reply)) == "infrastructure", reply
    for reply in (
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR value is not an integer or out of range",
    ):
        assert classify(parsed(reply)) == "permanent", reply


# Before handling (error None): attempt x deadline x envelope -> handle or dead letter.
# (attempt, seconds left or None, hops, addressed to, action, reason)
BEFORE = [
    (1, None, 0, "echo", "handle", ""),
    (CAP, 30.0, 3, "echo", "handle", ""),  # the cap itself may still be handled
    (CAP + 1, None, 0, "echo", "dead", "max_deliveries"),
    (CAP + 1, -5.0, 0, "echo", "dead", "max_deliveries"),  # the cap is checked first
    (1, 0.0, 0, "echo", "dead", "expired"),
    (1, -0.5, 0, "echo", "dead", "expired"),
    (1, 0.01, 0, "echo", "handle", ""),
    (1, None, AgentMessage.MAX_HOPS, "echo", "handle", ""),
    (1, None, AgentMessage.MAX_HOPS + 1, "echo", "dead", "too_many_hops"),
    (1, None, 0, "sink", "dead", "misrouted"),
]


@pytest.mark.parametrize(("attempt", "left", "hops", "to", "action", "reason"), BEFORE)
def test_fate_before_handling(
    attempt: int, left: float | None, hops: int, to: str, action: str, reason: str
) -> None:
    fate = fate_of(None, attempt, RULES, left=left, hops=hops, to_agent=to)
    assert fate.action == action
    assert fate.reason == reason
    if action == "handle":
        assert fate is HANDLE  # the hot path compares identity


def test_requester_status_of_checks_before_handling() -> None:
    assert fate_of(None, 1, RULES, left=-1.0).status == "timeout"
    assert fate_of(None, CAP + 1, RULES).status == "failed"
    assert fate_of(None, 1, RULES, to_agent="sink").status == "rejected"


# After the handler policy reported (PolicyMiddleware's HandlerFailed): error x attempt x
# seconds left x whether the work really failed -> fate.
# (error, attempt, left, failed, action, reason or delay, counted)
REPORTED = [
    # an open breaker that only refused: waits for the probe, never burns a delivery
    (BreakerOpen("llm", 2.0), 1, None, False, "retry", 2.0, False),
    (BreakerOpen("llm", 2.0), CAP, None, False, "retry", 2.0, False),
    (BreakerOpen("llm", 2.0), CAP, 60.0, False, "retry", 2.0, False),
    # the work really failed in this delivery (a poison message tripping the breaker)
    (BreakerOpen("llm", 2.0), 1, None, True, "retry", 2.0, True),
    (BreakerOpen("llm", 2.0), CAP, None, True, "dead", "max_deliveries", None),
    # the breaker stays open past the deadline: expired at once
    (BreakerOpen("llm", 30.0), 1, 5.0, False, "dead", "expired", None),
    (BreakerOpen("llm", 5.0), 1, 5.0, True, "dead", "expired", None),
    # the deadline passed while handling, whatever the error
    (TimeoutError("cut"), 1, -0.1, True, "dead", "expired", None),
    (RuntimeError("flaky"), 1, 0.0, True, "dead", "expired", None),
    (DeadlineExceeded("deadline passed"), 1, 3.0, True, "dead", "expired", None),
    # a step timeout inside the horizon is transient: retried, counted, never final at once
    (TimeoutError("step timed out"), 1, 30.0, True, "retry", 0.5, True),
    (TimeoutError("step timed out"), CAP - 1, 30.0, True, "retry", 4.0, True),
    (TimeoutError("step timed out"), CAP, 30.0, True, "dead", "max_deliveries", None),
    # retry_after (rate limits) beyond the backoff
    (LLMRateLimited("429", retry_after=45), 1, None, True, "retry", 45.0, True),
    (LLMRateLimited("429", retry_after=45), CAP, None, True, "dead", "max_deliveries", None),
    (LLMRateLimited("429", retry_after=2), 1, 30.0, True, "retry", 2.0, True),
    # infrastructure errors are retried without counting, even at the cap
    (redis_errors.ConnectionError("reset"), CAP, 30.0, True, "retry", 8.0, False),
    (PluginError("bad input"), 1, 30.0, True, "dead", "permanent_error", None),
]


@pytest.mark.parametrize(
    ("exc", "attempt", "left", "failed", "action", "detail", "counted"), REPORTED
)
def test_fate_of_what_the_handler_policy_reported(
    exc: BaseException,
    attempt: int,
    left: float | None,
    failed: bool,
    action: str,
    detail: object,
    counted: bool | None,
) -> None:
    fate = fate_of(exc, attempt, RULES, left=left, failed=failed)
    assert fate.action == action
    if action == "dead":
        assert fate.reason == detail
    else:
        assert fate.delay == detail
        assert fate.counted is counted


def test_breaker_delay_is_spread_a_little() -> None:
    fate = fate_of(BreakerOpen("llm", 2.0), 1, RULES, failed=False)
    assert 0 < fate.jitter <= 0.5
    assert fate_of(BreakerOpen("llm", 60.0), 1, RULES, failed=False).jitter == 0.5


def test_a_handler_timeout_is_retried_not_dead_lettered_on_first_occurrence() -> None:
    """What the worker raises when the handler pool's watchdog cuts a handler (no handler
    policy report): retried with backoff on every delivery below the cap."""
    timeout = TimeoutError("handler timed out after 0.5s")
    fates = [fate_of(timeout, attempt, RULES) for attempt in range(1, CAP + 1)]
    assert [f.action for f in fates] == ["retry"] * (CAP - 1) + ["dead"]
    assert all(f.counted for f in fates[:-1])
    assert fates[-1].reason == "max_deliveries" and "timed out" in fates[-1].error


@pytest.mark.parametrize(
    ("exc", "action", "reason", "status"),
    [
        (Skip(), "ack", "", "failed"),
        (Reject("no tool"), "dead", "rejected", "rejected"),
        (Reject("policy", code="policy_denied"), "dead", "policy_denied", "rejected"),
        (Reject("late", code="expired"), "dead", "expired", "timeout"),
        (Reject("refused", code="unwritable_output"), "dead", "unwritable_output", "failed"),
        (DecodeError("oversize", "too big"), "dead", "oversize", "failed"),
        (DecodeError("bad_signature", "forged"), "dead", "bad_signature", "rejected"),
        (DecodeError("undecodable", "decoder failed"), "dead", "undecodable", "failed"),
    ],
)
def test_signals_and_intake_errors(
    exc: BaseException, action: str, reason: str, status: str
) -> None:
    fate: Fate = fate_of(exc, 1, RULES)
    assert (fate.action, fate.reason) == (action, reason)
    if action == "dead":
        assert fate.status == status


_seconds = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 60.0, -60.0, 3600.0, 3600.5, -60.5]),
)


@given(
    attempt=st.integers(0, 8),
    left=st.none() | _seconds,
    hops=st.integers(0, AgentMessage.MAX_HOPS + 2),
    to_agent=st.sampled_from(["", "echo", "other"]),
    age=st.none() | _seconds,
    max_age=st.sampled_from([3600.0, math.inf]),
    clock_skew=st.sampled_from([60.0, 0.0, math.inf]),
)
def test_before_handling_is_the_table_of_checks_before_handling(
    attempt: int,
    left: float | None,
    hops: int,
    to_agent: str,
    age: float | None,
    max_age: float,
    clock_skew: float,
) -> None:
    """The worker's one-call check (a fast all-clear test first) decides exactly as the
    table's checks in order, NaN and infinities included."""
    rules = Rules("echo", 5, max_age=max_age, clock_skew=clock_skew)
    expected = _freshness(age, rules) or _before(attempt, rules, left, hops, to_agent)
    assert before_handling(attempt, rules, left, hops, to_agent, age) == expected
    assert fate_of(None, attempt, rules, left=left, hops=hops, to_agent=to_agent, age=age) == (
        expected
    )


_decoded_instant = TypeAdapter(datetime).validate_python  # pydantic-core's own TzInfo


@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(
            st.just(UTC),
            st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))),
            st.sampled_from([ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")]),
        ),
    ),
    through_pydantic=st.booleans(),
)
def test_epoch_seconds_is_the_timestamp(moment: datetime, through_pydantic: bool) -> None:
    """Any aware instant, in a fixed-offset zone (datetime's or pydantic-core's, as decoded
    envelopes carry) or a zone with daylight saving time (the plain ``timestamp()``)."""
    if through_pydantic:
        offset = moment.utcoffset()
        assume(offset is not None and not offset % timedelta(minutes=1))  # as ISO text allows
        moment = _decoded_instant(moment.isoformat())
    assert epoch_seconds(moment) == moment.timestamp()
