"""Policy configuration models (YAML ``policies:`` blocks). Unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """In-handler retries of transient errors (tenacity)."""

    attempts: int = Field(default=3, ge=1, le=100)
    backoff: float = Field(default=0.2, ge=0, description="first delay, seconds")
    backoff_max: float = Field(default=10.0, ge=0)
    jitter: float = Field(default=0.1, ge=0, description="added random delay, seconds")
    retry_on: list[str] = Field(
        default_factory=lambda: ["transient"],
        description="error classes to retry: 'transient' (connection, timeout, 429/5xx) or "
                    "dotted exception paths from the allow-list")


class TimeoutPolicy(_Strict):
    """anyio cancel-scope timeouts."""

    attempt: float | None = Field(default=None, gt=0, description="seconds per attempt")
    total: float | None = Field(default=None, gt=0, description="seconds for all attempts")


class BreakerPolicy(_Strict):
    """pybreaker circuit breaker with state shared in Redis."""

    enabled: bool = True
    name: str | None = Field(default=None, description="breaker name shared by the fleet")
    fail_max: int = Field(default=5, ge=1)
    reset_timeout: float = Field(default=30.0, gt=0)


class PolicySet(_Strict):
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    breaker: BreakerPolicy | None = None
