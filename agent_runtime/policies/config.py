"""Policy configuration models (YAML ``policies:`` blocks). Unknown keys are errors.

Per agent type::

    policies:
      retry:   {attempts: 3, backoff: 0.2, backoff_max: 10, jitter: 0.1, retry_on: [transient]}
      timeout: {attempt: 20, total: 50}
      breaker: null                        # the handler itself has no breaker by default
      calls:                               # LLM providers and tools, by call name
        llm.anthropic: {breaker: {name: anthropic-main, fail_max: 5, reset_timeout: 30}}
        tool.http:     {timeout: {attempt: 5}, retry: {attempts: 2}}

See docs/policies.md for what each field does and the defaults.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Built-in error families usable in ``retry_on`` / ``failure_on``.
ERROR_FAMILIES = frozenset({"transient", "timeout", "connection", "any"})
_DOTTED_ERROR = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[:.][A-Za-z_]\w*$")
BREAKER_NAME = r"^[A-Za-z0-9_.:@\-]{1,128}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_error_names(value: list[str]) -> list[str]:
    for name in value:
        if name not in ERROR_FAMILIES and not _DOTTED_ERROR.match(name):
            families = ", ".join(sorted(ERROR_FAMILIES))
            raise ValueError(
                f"{name!r} is neither an error family ({families}) nor a dotted "
                "exception path like 'package.module:ErrorClass'"
            )
    return value


class RetryPolicy(_Strict):
    """In-process retries of failed attempts (tenacity)."""

    attempts: int = Field(default=3, ge=1, le=100, description="attempts in total (1: no retry)")
    backoff: float = Field(default=0.2, ge=0, description="first delay, seconds; doubles")
    backoff_max: float = Field(
        default=10.0,
        ge=0,
        description="longest in-process sleep; a Retry-After above it is "
        "not waited for here (the worker redelivers later)",
    )
    jitter: float = Field(default=0.1, ge=0, description="random extra delay, 0..jitter s")
    retry_on: list[str] = Field(
        default_factory=lambda: ["transient"],
        description="error classes to retry: families 'transient' (timeouts, connection "
        "errors, 408/425/429/5xx, errors with transient=True), 'timeout', "
        "'connection', 'any', or dotted exception paths from the allow-list",
    )

    check_retry_on = field_validator("retry_on")(_check_error_names)


class TimeoutPolicy(_Strict):
    """anyio cancel-scope timeouts. The message deadline always caps both."""

    attempt: float | None = Field(default=None, gt=0, description="seconds per attempt")
    total: float | None = Field(
        default=None, gt=0, description="seconds for all attempts and the sleeps between"
    )


class BreakerPolicy(_Strict):
    """pybreaker circuit breaker with its state shared in Redis by every worker."""

    enabled: bool = True
    name: str | None = Field(
        default=None,
        pattern=BREAKER_NAME,
        description="breaker name shared by the fleet (default: the call "
        "name, or 'agent.NAME' for a handler breaker)",
    )
    fail_max: int = Field(default=5, ge=1, description="consecutive failures that open it")
    reset_timeout: float = Field(
        default=30.0, gt=0, description="seconds open before one caller may probe"
    )
    failure_on: list[str] = Field(
        default_factory=lambda: ["transient"],
        description="errors that count as failures (same names as retry_on); other errors "
        "mean the dependency answered and count as success",
    )
    probe_timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds the half-open probe holds its lock (default: "
        "the attempt timeout + 1 s, else reset_timeout)",
    )

    check_failure_on = field_validator("failure_on")(_check_error_names)


class PolicySpec(_Strict):
    """Retry + timeout + breaker for one guarded operation (a handler, an LLM call, a tool)."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    breaker: BreakerPolicy | None = None


#: What an LLM/tool call gets when ``calls`` does not name it: default retry, no timeouts,
#: a breaker named after the call.
DEFAULT_CALL = PolicySpec(breaker=BreakerPolicy())


class PolicySet(PolicySpec):
    """An agent type's policies: its handler's (the inherited fields) and its calls'.

    A handler is not retried in-process by default (``retry.attempts: 1``): its calls have
    their own retries, and a failed delivery is redelivered by the worker with backoff."""

    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(attempts=1))

    calls: dict[str, PolicySpec] = Field(
        default_factory=dict,
        description="policies of the agent's LLM/tool calls by call name, e.g. 'llm.anthropic'"
        " or 'tool.http'; unlisted calls get DEFAULT_CALL",
    )

    @model_validator(mode="after")
    def _call_names(self) -> PolicySet:
        for name in self.calls:
            if not re.match(BREAKER_NAME, name):
                raise ValueError(f"call name {name!r} must match {BREAKER_NAME}")
        return self

    def for_call(self, name: str) -> PolicySpec:
        return self.calls.get(name, DEFAULT_CALL)
