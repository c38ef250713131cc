"""The pipeline's ``llm:`` block: LLM provider accounts and the fleet rate limits of each.

Example (YAML, top level of the pipeline file)::

    llm:
      accounts:
        openai-main:               # the limit's name (metrics label ``limit``, status rows)
          provider: openai
          requests_per_minute: 500
          tokens_per_minute: 200000
        anthropic:                 # named after a provider: its agents use it by default
          provider: anthropic
          requests_per_minute: 50

An agent's ``config.llm.account`` names its account (default: the account named after its
provider, if any). Every worker of the fleet shares each account's limit in Redis
(agent_runtime/policies/ratelimit.py); a call waits for its place within its request's
deadline. ``window_seconds`` is the length of the "minute" (default 60; tests and benchmarks
shorten it, the algorithm is the same). Unknown keys are errors. See docs/llm.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: Names end up inside a Redis Cluster hash tag and a Prometheus label: no braces, no spaces.
LIMIT_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"
AccountName = Annotated[str, StringConstraints(pattern=LIMIT_NAME)]


class AccountLimits(BaseModel):
    """One provider account: its requests and tokens per minute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="e.g. openai, anthropic")
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=10_000_000, description="calls admitted per window (any window)"
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="input + output tokens per window: an estimate is reserved before the "
        "call (prompt bytes / 4 + max_tokens) and replaced by the real usage after it",
    )
    window_seconds: float = Field(
        default=60.0, ge=0.1, le=3600, description="the window ('minute') length, seconds"
    )
    lease_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="how long a call whose worker died holds its place before its window "
        "starts (default: twice the provider timeout + 10 s)",
    )

    @model_validator(mode="after")
    def _some_limit(self) -> AccountLimits:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("set requests_per_minute, tokens_per_minute or both")
        return self

    def meters(self) -> list[tuple[str, int]]:
        """(meter, limit) for each limit set: ``requests``, ``tokens``."""
        out = []
        if self.requests_per_minute is not None:
            out.append(("requests", self.requests_per_minute))
        if self.tokens_per_minute is not None:
            out.append(("tokens", self.tokens_per_minute))
        return out


class MessageLimits(BaseModel):
    """An agent type's ``rate_limit:``: messages the whole fleet of that type starts handling
    per window (default one second), whatever the number of workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages_per_second: int = Field(
        ge=1, le=1_000_000, description="handlings started per window, fleet-wide"
    )
    window_seconds: float = Field(default=1.0, ge=0.1, le=3600, description="the window")

    def meters(self) -> list[tuple[str, int]]:
        return [("messages", self.messages_per_second)]


class LLMFleet(BaseModel):
    """The pipeline's ``llm:`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: dict[AccountName, AccountLimits] = Field(default_factory=dict)

    def account_for(self, provider: str, account: str | None) -> tuple[str, AccountLimits] | None:
        """The account an agent's ``llm:`` block uses: ``account`` if named (KeyError if
        unknown), else the one named after ``provider``, else None (no limit)."""
        if account is not None:
            return account, self.accounts[account]
        found = self.accounts.get(provider)
        return (provider, found) if found is not None else None
