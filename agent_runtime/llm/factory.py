"""Build a provider from an agent's ``llm:`` config block.

Example (YAML, inside an agent's ``config:``)::

    llm:
      provider: anthropic        # rules (default, offline) | anthropic | openai
      model: claude-haiku-4-5    # default per provider
      max_tokens: 1024           # upper bound of one answer
      timeout: 30                # seconds per attempt
      cache_ttl: 86400           # response cache in Redis, seconds; 0 disables it
      price: {input: 1.0, output: 5.0}   # USD per million tokens, overrides the table
      call: llm.anthropic        # the call policy (default llm.PROVIDER)
      account: anthropic-main    # fleet rate limit: the pipeline's llm.accounts.NAME
                                 # (default: the account named after the provider, if any)

Retries, the attempt and total timeouts and the circuit breaker of every call are the call
policy's: ``policies: calls: llm.anthropic: {...}`` of the agent (docs/policies.md), run under
the request's deadline. Unknown keys are errors. API keys come from the environment only
(ANTHROPIC_API_KEY, OPENAI_API_KEY), base URLs from ``base_url`` or ANTHROPIC_BASE_URL /
OPENAI_BASE_URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent_runtime.config.limits import LIMIT_NAME, LLMFleet
from agent_runtime.config.registry import import_object
from agent_runtime.errors import ConfigError
from agent_runtime.llm.base import LLMProvider
from agent_runtime.llm.cache import DEFAULT_TTL, CachedProvider
from agent_runtime.llm.cost import Price, PriceTable
from agent_runtime.policies.config import BREAKER_NAME, PolicySpec
from agent_runtime.policies.errors import is_transient
from agent_runtime.policies.runner import Policy
from agent_runtime.transport.keys import Keys

if TYPE_CHECKING:
    from agent_runtime.policies.middleware import Policies
    from agent_runtime.policies.ratelimit import RateLimiter
    from agent_runtime.transport.base import LLMStore

#: provider name -> module:class, imported only when chosen (the SDKs import slowly). A host
#: extends it (``build_provider(..., providers=...)``): the default pipeline's agents add
#: their offline ``rules`` provider (agents/rules.py), which the library never imports.
PROVIDERS: Mapping[str, str] = {
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
    call: str | None = Field(
        default=None,
        pattern=BREAKER_NAME,
        description="name of the call policy (``policies.calls.NAME``); default llm.PROVIDER",
    )

    account: str | None = Field(
        default=None,
        pattern=LIMIT_NAME,
        description="the pipeline's llm.accounts entry whose rate limits the calls wait for "
        "(default: the account named after the provider, if the pipeline has one)",
    )

    @property
    def call_name(self) -> str:
        return self.call or f"llm.{self.provider}"

    @model_validator(mode="before")
    @classmethod
    def _no_retry_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "retry" in data:
            raise ValueError(
                "retry: LLM calls retry under their call policy: set "
                "policies.calls.llm.PROVIDER.retry of the agent (docs/policies.md)"
            )
        return data

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
    policies: Policies | None = None,
    providers: Mapping[str, str] = PROVIDERS,
    allowed_modules: tuple[str, ...] = (),
) -> LLMProvider:
    """The provider ``spec`` names (in ``providers``: name -> dotted path, imported only
    from ``agent_runtime.llm`` and ``allowed_modules``). Its calls run under the call policy
    ``spec.call_name`` of ``policies`` (the worker's: retry, timeouts, the fleet's shared
    breaker, the request's deadline), or without them (tests, scripts) under a local default
    policy without a breaker. Wrapped in the response cache when ``store`` is given. An
    offline provider (class attribute ``offline = True``, e.g. the rules provider) is built
    without options, never cached, nor run under a policy: it is free and deterministic."""
    parsed = parse_spec(spec)
    cls = _provider_class(parsed.provider, providers, allowed_modules)
    if getattr(cls, "offline", False):
        offline: LLMProvider = cls()
        return offline
    provider = _instantiate(cls, parsed, policies)
    if store is None or parsed.cache_ttl == 0:
        return provider
    return CachedProvider(provider, store, keys or Keys(), ttl=parsed.cache_ttl)


def call_policy(name: str, policies: Policies | None) -> Policy:
    """``policies.call(name)``, else the default call policy without a breaker."""
    if policies is not None:
        return policies.call(name)
    return Policy(name, PolicySpec(), retryable=is_transient)


def _provider_class(name: str, providers: Mapping[str, str], allowed: tuple[str, ...]) -> Any:
    path = providers.get(name)
    if path is None:
        known = ", ".join(sorted(providers))
        raise ConfigError(f"llm provider {name!r} is not available here (known: {known})")
    try:
        return import_object(path, allowed=("agent_runtime.llm", *allowed))
    except ConfigError as exc:
        raise ConfigError(f"llm provider {name!r} is not available: {exc}") from exc


def _instantiate(cls: Any, spec: LLMSpec, policies: Policies | None) -> LLMProvider:
    options: dict[str, Any] = {
        "max_tokens": spec.max_tokens,
        "timeout": spec.timeout,
        "base_url": spec.base_url,
        "temperature": spec.temperature,
        "policy": call_policy(spec.call_name, policies),
    }
    model = spec.model or cls.default_model
    options["model"] = model
    if spec.price is not None:
        options["prices"] = PriceTable({model: Price(spec.price.input, spec.price.output)})
    limiter = rate_limiter(spec, policies)
    if limiter is not None:
        options["limiter"] = limiter
    provider: LLMProvider = cls(**options)
    return provider


def rate_limiter(spec: LLMSpec, policies: Policies | None) -> RateLimiter | None:
    """The fleet rate limit of ``spec``'s account (None: the pipeline limits nothing)."""
    limits = getattr(policies, "limits", None) or {}  # a host's policies may have none
    try:
        found = LLMFleet(accounts=limits).account_for(spec.provider, spec.account)
    except KeyError:
        known = ", ".join(sorted(limits)) or "none"
        raise ConfigError(
            f"llm account {spec.account!r} is not in the pipeline's llm.accounts (known: {known})"
        ) from None
    if found is None or policies is None:
        return None
    limiter: RateLimiter = policies.rate_limiter(found[0])
    return limiter
