"""The fate of a failed delivery, as a table: error x attempt -> retry / dead letter."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError
from redis import exceptions as redis_errors

from agent_runtime.errors import (
    BreakerOpen,
    BudgetExceeded,
    ConfigError,
    LLMRateLimited,
    LLMRequestError,
    Reject,
    Retry,
)
from agent_runtime.policies.errors import classify
from agent_runtime.worker.fate import fate_of


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
    fate = fate_of(
        exc,
        attempt,
        max_deliveries=CAP,
        retry_backoff=0.5,
        retry_backoff_max=60.0,
        permanent=(PluginError,),
    )
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
    fate = fate_of(
        Reject("x", code=reason), 1, max_deliveries=CAP, retry_backoff=1, retry_backoff_max=1
    )
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
