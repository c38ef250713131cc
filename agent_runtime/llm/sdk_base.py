"""What the SDK-backed providers share: key from the environment, options, lazy SDK client.

A subclass names its provider and environment variables in class attributes and implements
:meth:`SDKProvider._make_client` (importing its SDK there, on first use: the vendor SDKs stay
unimported until a call needs them) and :meth:`SDKProvider._attempt` (one call, no retries:
:meth:`SDKProvider.complete` runs it under its call policy,
:class:`~agent_runtime.policies.runner.Policy`: retry of transient errors honouring
Retry-After, attempt and total timeouts, the shared breaker, all capped by the request's
deadline).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from agent_runtime.errors import ConfigError, LLMError, LLMUnavailable
from agent_runtime.llm.base import Completion
from agent_runtime.llm.cost import PriceTable
from agent_runtime.policies.config import PolicySpec
from agent_runtime.policies.errors import is_exhausted, is_transient, mark_exhausted
from agent_runtime.policies.ratelimit import RateLimiter, estimate_tokens
from agent_runtime.policies.runner import Policy

ModelT = TypeVar("ModelT", bound=BaseModel)


class _SDKClient(Protocol):
    async def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_SDKClient)


class SDKProvider(ABC, Generic[ClientT]):
    """Base of :class:`~agent_runtime.llm.base.LLMProvider` implementations over a vendor SDK."""

    name: str
    default_model: ClassVar[str]
    #: Environment variable holding the API key (the only place the key is read from).
    key_env: ClassVar[str]
    #: Environment variable giving the base URL when the config does not.
    base_url_env: ClassVar[str]

    def __init__(
        self,
        *,
        model: str | None = None,
        max_tokens: int = 4096,
        timeout: float = 60.0,
        base_url: str | None = None,
        temperature: float | None = None,
        policy: Policy | None = None,
        prices: PriceTable | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        key = os.environ.get(self.key_env, "")
        if not key:
            raise ConfigError(
                f"the {self.name} provider needs the environment variable {self.key_env}"
            )
        self.model = self.default_model if model is None else model
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.base_url = base_url or os.environ.get(self.base_url_env) or None
        self.temperature = temperature
        self.policy = policy or Policy(f"llm.{self.name}", PolicySpec(), retryable=is_transient)
        self.prices = prices or PriceTable()
        self.limiter = limiter
        self._key = key
        self._sdk: ClientT | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    async def complete(
        self, *, system: str, prompt: str, schema: type[ModelT], max_tokens: int = 1024
    ) -> Completion[ModelT]:
        tokens = min(max_tokens, self.max_tokens)
        self._client()  # the SDK's first import (1-2 s) is no part of any attempt's timeout
        try:
            return await self.policy.run(self._limited, system, prompt, schema, tokens)
        except TimeoutError as exc:  # the policy cut the call: the provider did not answer
            error = LLMUnavailable(f"{self.name} call cut by its timeout ({self.policy.name})")
            if is_exhausted(exc):
                mark_exhausted(error)
            raise error from exc

    async def _limited(
        self, system: str, prompt: str, schema: type[ModelT], max_tokens: int
    ) -> Completion[ModelT]:
        """One attempt, after waiting for its place in the account's fleet rate limit (each
        attempt is one request the provider counts, so each waits)."""
        if self.limiter is None:
            return await self._attempt(system, prompt, schema, max_tokens)
        estimate = estimate_tokens(system, prompt, max_tokens=max_tokens)
        async with self.limiter.slot(tokens=estimate, lease=2 * self.timeout + 10) as slot:
            try:
                completion = await self._attempt(system, prompt, schema, max_tokens)
            except LLMError as exc:
                usage = getattr(exc, "usage", None)
                if usage is not None:
                    slot.tokens = usage.input_tokens + usage.output_tokens
                raise
            slot.tokens = completion.usage.input_tokens + completion.usage.output_tokens
            return completion

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    def _client(self) -> ClientT:
        if self._sdk is None:
            self._sdk = self._make_client()
        return self._sdk

    @abstractmethod
    def _make_client(self) -> ClientT:
        """A new SDK client (SDK retries off), importing the SDK here, not at module level."""

    @abstractmethod
    async def _attempt(
        self, system: str, prompt: str, schema: type[ModelT], max_tokens: int
    ) -> Completion[ModelT]:
        """One call to the API, no retries."""


__all__ = ["SDKProvider"]
