"""Building providers from an agent's ``llm:`` block."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import fakeredis
import pytest

from agent_runtime.errors import ConfigError
from agent_runtime.llm.anthropic_provider import AnthropicProvider
from agent_runtime.llm.cache import CachedProvider
from agent_runtime.llm.cost import Price
from agent_runtime.llm.factory import LLMSpec, build_provider, parse_spec
from agent_runtime.llm.openai_provider import OpenAIProvider
from agent_runtime.llm.retry import DefaultRetry
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.llm_store import RedisLLMStore
from tests.conftest import ROOT


@pytest.fixture
def keys_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeAsyncRedis()


def test_default_is_the_offline_rules_provider_without_cache(redis: Any) -> None:
    provider = build_provider({}, store=RedisLLMStore(redis), keys=Keys("t"))
    assert provider.name == "rules" and not isinstance(provider, CachedProvider)


@pytest.mark.usefixtures("keys_in_env")
def test_anthropic_with_options_is_cached(redis: Any) -> None:
    provider = build_provider(
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "max_tokens": 2048,
            "timeout": 12,
            "base_url": "http://127.0.0.1:9/",
            "cache_ttl": 60,
            "retry": {"attempts": 5},
        },
        store=RedisLLMStore(redis),
        keys=Keys("t"),
    )
    assert isinstance(provider, CachedProvider)
    inner = provider.inner
    assert isinstance(inner, AnthropicProvider)
    assert (inner.model, inner.max_tokens, inner.timeout) == ("claude-sonnet-4-5", 2048, 12)
    assert inner.base_url == "http://127.0.0.1:9/"
    assert isinstance(inner.retry, DefaultRetry) and inner.retry.attempts == 5
    assert "sk-ant-secret" not in repr(provider)


@pytest.mark.usefixtures("keys_in_env")
def test_openai_default_model_price_override_and_no_cache() -> None:
    provider = build_provider({"provider": "openai", "price": {"input": 1, "output": 2}})
    assert isinstance(provider, OpenAIProvider)
    assert provider.model == "gpt-4.1-mini"
    assert provider.prices.price("openai", "gpt-4.1-mini-2025-04-14") == Price(1, 2)
    uncached = build_provider(
        {"provider": "openai", "cache_ttl": 0}, store=RedisLLMStore(fakeredis.FakeAsyncRedis())
    )
    assert isinstance(uncached, OpenAIProvider)


@pytest.mark.usefixtures("keys_in_env")
def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8/v1")
    provider = build_provider({"provider": "openai"})
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:8/v1"


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"provider": "anthropic", "api_key": "sk-in-config"}, "api_key: Extra inputs"),
        ({"provider": "gemini"}, "provider: Input should be"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"base_url": "file:///etc/passwd"}, "base_url"),
        ({"price": {"input": 1}}, "price.output"),
        ({"retry": {"attempts": 3, "forever": True}}, "retry.forever"),
    ],
)
def test_bad_specs_are_config_errors(spec: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("provider", "variable"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
def test_missing_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, provider: str, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=variable):
        build_provider(LLMSpec(provider=provider))  # type: ignore[arg-type]


def test_vendor_sdks_are_imported_only_when_used() -> None:
    code = (
        "import sys, agent_runtime.llm.factory, agent_runtime.llm.anthropic_provider, "
        "agent_runtime.llm.openai_provider, agent_runtime.llm.cache; "
        "print(sorted(m for m in ('anthropic', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.usefixtures("keys_in_env")
def test_a_given_call_policy_replaces_the_default_retry() -> None:
    policy = DefaultRetry(attempts=7)
    provider = build_provider({"provider": "anthropic"}, retry=policy)
    assert isinstance(provider, AnthropicProvider) and provider.retry is policy
