"""Build a provider from an agent's ``llm:`` config block.

Example (YAML, inside an agent's ``config:``)::

    llm:
      provider: anthropic        # rules (default, offline) | anthropic | openai
      model: claude-haiku-4-5    # default per provider
      max_tokens: 1024           # upper bound of one answer
      timeout: 30                # seconds per attempt
      cache_ttl: 86400           # response cache in Redis, seconds; 0 disables it
      price: {input: 1.0, output: 5.0}   # USD per million tokens, overrides the table

Unknown keys are errors. API keys come from the environment only (ANTHROPIC_API_KEY,
OPENAI_API_KEY), base URLs from ``base_url`` or ANTHROPIC_BASE_URL / OPENAI_BASE_URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent_runtime.config.registry import import_object
from agent_runtime.errors import ConfigError
from agent_runtime.llm.base import LLMProvider
from agent_runtime.llm.cache import DEFAULT_TTL, CachedProvider
from agent_runtime.llm.cost import Price, PriceTable
from agent_runtime.llm.retry import CallPolicy, DefaultRetry
from agent_runtime.transport.keys import Keys

if TYPE_CHECKING:
    from agent_runtime.transport.base import LLMStore

#: provider name -> module:class, imported only when chosen (the SDKs import slowly).
PROVIDERS: Mapping[str, str] = {
    "rules": "agent_runtime.llm.rules:RulesProvider",
    "anthropic": "agent_runtime.llm.anthropic_provider:AnthropicProvider",
    "openai": "agent_runtime.llm.openai_provider:OpenAIProvider",
}

#: provider name -> the environment variable holding its API key (the only place a key is
#: read from; ``validate`` and the commands that start workers check it is set).
KEY_ENV: Mapping[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}


class PriceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="USD per million input tokens")
    output: float = Field(ge=0, description="USD per million output tokens")


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=10)
    backoff: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=8.0, ge=0)
    max_retry_after: float = Field(default=30.0, ge=0)


class LLMSpec(BaseModel):
    """An agent's ``llm:`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["rules", "anthropic", "openai"] = "rules"
    model: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    timeout: float = Field(default=60.0, gt=0, le=3600)
    base_url: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    cache_ttl: int = Field(default=DEFAULT_TTL, ge=0)
    price: PriceSpec | None = None
    retry: RetrySpec = Field(default_factory=RetrySpec)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value


def parse_spec(spec: Mapping[str, Any] | LLMSpec) -> LLMSpec:
    """Validate an ``llm:`` block; a :class:`ConfigError` names every bad key."""
    if isinstance(spec, LLMSpec):
        return spec
    try:
        return LLMSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'llm'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid llm config: {problems}") from None


def build_provider(
    spec: Mapping[str, Any] | LLMSpec,
    *,
    store: LLMStore | None = None,
    keys: Keys | None = None,
    retry: CallPolicy | None = None,
) -> LLMProvider:
    """The provider ``spec`` names, wrapped in the response cache when ``store`` is given
    (the offline rules provider is never cached: it is free and deterministic). ``retry``
    replaces the default retry built from ``spec.retry`` (e.g. the resilience policies)."""
    parsed = parse_spec(spec)
    provider = _instantiate(parsed, retry)
    if parsed.provider == "rules" or store is None or parsed.cache_ttl == 0:
        return provider
    return CachedProvider(provider, store, keys or Keys(), ttl=parsed.cache_ttl)


def _instantiate(spec: LLMSpec, retry: CallPolicy | None) -> LLMProvider:
    try:
        cls = import_object(PROVIDERS[spec.provider], allowed=("agent_runtime.llm",))
    except ConfigError as exc:
        raise ConfigError(f"llm provider {spec.provider!r} is not available: {exc}") from exc
    if spec.provider == "rules":
        provider: LLMProvider = cls()
        return provider
    options: dict[str, Any] = {
        "max_tokens": spec.max_tokens,
        "timeout": spec.timeout,
        "base_url": spec.base_url,
        "temperature": spec.temperature,
        "retry": retry or DefaultRetry(**spec.retry.model_dump()),
    }
    model = spec.model or cls.default_model
    options["model"] = model
    if spec.price is not None:
        options["prices"] = PriceTable({model: Price(spec.price.input, spec.price.output)})
    provider = cls(**options)
    return provider
