"""What both vendor providers share at the SDK boundary: HTTP status -> our errors (once),
Retry-After parsing, validation of the model's structured answer, per-attempt timeouts."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent_runtime.errors import (
    LLMError,
    LLMOutputError,
    LLMRateLimited,
    LLMRequestError,
    LLMUnavailable,
)
from agent_runtime.llm.base import Usage
from agent_runtime.policies.clock import remaining

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Statuses worth retrying besides 429 and 5xx (the vendors' own SDKs retry these too).
_RETRYABLE_4XX = frozenset({408, 409})
_MAX_DETAIL = 300


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def error_from_status(
    provider: str, status: int, headers: Mapping[str, str], detail: str
) -> LLMError:
    """Map one HTTP error answer to our error tree (the SDK error is chained by the caller)."""
    text = f"{provider} answered HTTP {status}: {detail[:_MAX_DETAIL]}"
    if status == 429:
        return LLMRateLimited(text, retry_after=parse_retry_after(headers))
    should_retry = {k.lower(): v for k, v in headers.items()}.get("x-should-retry")
    if status >= 500 or status in _RETRYABLE_4XX or should_retry == "true":
        return LLMUnavailable(text)
    return LLMRequestError(text)


def attempt_timeout(configured: float) -> float:
    """The timeout of one attempt: the configured one, cut to what the deadline leaves."""
    left = remaining()
    if left is None:
        return configured
    if left <= 0:
        raise LLMUnavailable("the call's deadline passed before the attempt started")
    return min(configured, left)


def tool_name(schema: type[BaseModel]) -> str:
    """A name the vendors accept (``^[A-Za-z0-9_-]{1,64}$``) for a schema."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64] or "answer"


def validate_object(schema: type[ModelT], data: Any, usage: Usage) -> ModelT:
    """``data`` (already parsed JSON) as a ``schema`` instance, or :class:`LLMOutputError`."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise LLMOutputError(_summary(usage, schema, exc), usage=usage) from exc


def validate_json(schema: type[ModelT], text: str, usage: Usage) -> ModelT:
    """``text`` (JSON) as a ``schema`` instance, or :class:`LLMOutputError`."""
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        raise LLMOutputError(_summary(usage, schema, exc), usage=usage) from exc


def _summary(usage: Usage, schema: type[BaseModel], exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
    )
    return (
        f"{usage.provider} model {usage.model} answered output that does not match "
        f"{schema.__name__} ({exc.error_count()} error(s): {problems})"
    )
