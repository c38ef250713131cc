"""HTTP answers -> our error tree, Retry-After parsing, validation messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import BaseModel

from agent_runtime.errors import (
    AgentRuntimeError,
    LLMOutputError,
    LLMRateLimited,
    LLMRequestError,
    LLMUnavailable,
)
from agent_runtime.llm.base import Usage
from agent_runtime.llm.boundary import (
    error_from_status,
    parse_retry_after,
    tool_name,
    validate_json,
)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after({"retry-after": when})
    assert parsed is not None and 25 <= parsed <= 31


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, LLMRateLimited),
        (500, LLMUnavailable),
        (503, LLMUnavailable),
        (529, LLMUnavailable),
        (408, LLMUnavailable),
        (409, LLMUnavailable),
        (400, LLMRequestError),
        (401, LLMRequestError),
        (403, LLMRequestError),
        (404, LLMRequestError),
        (413, LLMRequestError),
        (422, LLMRequestError),
    ],
)
def test_status_mapping(status: int, kind: type[Exception]) -> None:
    error = error_from_status("anthropic", status, {}, "detail")
    assert type(error) is kind
    assert isinstance(error, AgentRuntimeError)
    assert error.transient is (kind is not LLMRequestError)
    assert f"HTTP {status}" in str(error)


def test_rate_limit_carries_retry_after_and_should_retry_header_is_honoured() -> None:
    limited = error_from_status("openai", 429, {"Retry-After": "3"}, "slow down")
    assert isinstance(limited, LLMRateLimited) and limited.retry_after == 3.0
    assert isinstance(error_from_status("x", 400, {"x-should-retry": "true"}, ""), LLMUnavailable)


def test_long_detail_is_cut() -> None:
    assert len(str(error_from_status("x", 400, {}, "y" * 10_000))) < 400


class Small(BaseModel):
    name: str
    count: int


def test_validation_error_names_the_fields_and_keeps_usage() -> None:
    usage = Usage("openai", "gpt-4o", 10, 5, 0.01)
    with pytest.raises(LLMOutputError, match=r"does not match Small .*count") as caught:
        validate_json(Small, '{"name": "a", "count": "many"}', usage)
    assert caught.value.usage == usage
    with pytest.raises(LLMOutputError, match="Invalid JSON"):
        validate_json(Small, '{"name": ', usage)


def test_tool_names_are_what_the_apis_accept() -> None:
    assert tool_name(Small) == "Small"
    generic = type("Box[int]", (BaseModel,), {})
    assert tool_name(generic) == "Box_int_"
