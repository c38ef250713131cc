"""How the CLI turns failures into one line and an exit status, and replies into an exit status
(agent_runtime/cli/failures.py, cli/outcome.py); the real console script is driven in
tests/e2e/test_cli_failures.py."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.exceptions as redis_errors

from agent_runtime.cli.common import check_url
from agent_runtime.cli.failures import (
    EXIT_NOT_OK,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    describe,
    mask_url,
)
from agent_runtime.cli.outcome import exit_status
from agent_runtime.client import user_request
from agent_runtime.errors import ConfigError, RequestError, RequestTimeout
from protocols.core import MAX_REQUEST_TEXT, RequestFailed
from protocols.pipeline import Report

URL = "redis://app:hunter2secret@db.example:6380/0"


def wrapped(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner``, as redis-py raises its errors."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - the implicit context is what redis-py leaves
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            wrapped(redis_errors.ConnectionError("Error 111"), ConnectionRefusedError(111, "x")),
            "connection refused",
        ),
        (
            wrapped(redis_errors.ConnectionError("Error -2"), socket.gaierror(-2, "unknown")),
            "unknown host",
        ),
        (
            wrapped(redis_errors.ConnectionError("denied"), redis_errors.AuthenticationError("no")),
            "authentication failed",
        ),
        (
            wrapped(redis_errors.ConnectionError("Error 1"), ssl.SSLError(1, "WRONG_VERSION")),
            "TLS failed",
        ),
        (redis_errors.TimeoutError("Timeout connecting to server"), "timed out"),
        (TimeoutError(), "timed out"),
        (redis_errors.InvalidResponse("Protocol error"), "not a Redis server"),
        (
            wrapped(redis_errors.ConnectionError("Error 2"), FileNotFoundError(2, "x")),
            "no server socket",
        ),
    ],
)
def test_a_server_failure_is_one_line_naming_the_masked_url(
    error: BaseException, expected: str
) -> None:
    failure = describe(error, URL)
    assert failure is not None
    assert failure.code == EXIT_UNREACHABLE
    (line,) = failure.lines
    assert line.startswith("redis://app:***@db.example:6380/0: ")
    assert expected in line
    assert "hunter2secret" not in line
    assert line.endswith(")"), "a hint in parentheses"


def test_exception_groups_are_unwrapped_to_the_failure_inside() -> None:
    timeout = RequestTimeout("no reply for request 1 within 2s")
    nested = BaseExceptionGroup("tg", [ExceptionGroup("inner", [timeout])])
    failure = describe(nested, None)
    assert failure is not None and failure.code == EXIT_TIMEOUT
    refused = wrapped(redis_errors.ConnectionError("Error 111"), ConnectionRefusedError(111, "x"))
    both = ExceptionGroup("tg", [refused, refused])
    assert describe(both, URL) is not None
    assert describe(both, URL).code == EXIT_UNREACHABLE  # type: ignore[union-attr]


def test_a_bug_is_not_an_expected_failure_even_inside_a_group() -> None:
    assert describe(KeyError("x"), URL) is None
    refused = wrapped(redis_errors.ConnectionError("Error 111"), ConnectionRefusedError(111, "x"))
    assert describe(ExceptionGroup("tg", [refused, ZeroDivisionError()]), URL) is None


def test_config_and_usage_errors_exit_2_one_line_per_problem() -> None:
    failure = describe(ConfigError("a.yaml:3: agents.x: bad\na.yaml:9: agents.y: worse"), None)
    assert failure is not None and failure.code == EXIT_USAGE
    assert failure.lines == ["a.yaml:3: agents.x: bad", "a.yaml:9: agents.y: worse"]
    assert describe(RequestError("the request text is empty"), None).code == EXIT_USAGE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "localhost:6379", "redis-cluster://h:1", "redis://h:99999"],
)
def test_urls_that_cannot_be_redis_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        check_url(url)


def test_mask_url_hides_passwords_in_user_info_and_query() -> None:
    assert mask_url("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert mask_url("unix:///tmp/r.sock?db=0&password=s3cret") == (
        "unix:///tmp/r.sock?db=0&password=***"
    )


def test_request_text_limits_are_named() -> None:
    assert user_request("x" * MAX_REQUEST_TEXT).text == "x" * MAX_REQUEST_TEXT
    with pytest.raises(RequestError, match="16,000"):
        user_request("x" * (MAX_REQUEST_TEXT + 1))
    for empty in ("", "  \n\t"):
        with pytest.raises(RequestError, match=r"empty.*16,000"):
            user_request(empty)


def _report(status: Any) -> Report:
    now = datetime.now(UTC)
    return Report(
        correlation_id="c",
        status=status,
        request="r",
        requested_at=now,
        finished_at=now,
        total_ms=0,
    )


def _failed(status: Any, code: str = "") -> RequestFailed:
    return RequestFailed(status=status, reason="r", agent="a", code=code)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (_report("succeeded"), EXIT_OK),
        (_report("rejected"), EXIT_NOT_OK),
        (_report("invalid_request"), EXIT_NOT_OK),
        (_failed("failed", "max_deliveries"), EXIT_NOT_OK),
        (_failed("rejected", "rejected"), EXIT_NOT_OK),
        (_failed("timeout", "expired"), EXIT_TIMEOUT),
        (_failed("failed", "no_consumer"), EXIT_TIMEOUT),
        (user_request("a custom pipeline's own terminal reply"), EXIT_OK),
    ],
)
def test_every_outcome_has_its_exit_status(payload: Any, code: int) -> None:
    assert exit_status(payload) == code
