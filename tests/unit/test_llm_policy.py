"""LLM calls run under the call policy (agent_runtime/policies), the one resilience engine:
transient errors only are retried, Retry-After is honoured, a Retry-After longer than the
policy's longest sleep is raised at once (the worker redelivers later), no sleep goes past the
request's deadline, and a call the policy cuts is reported as the provider being unavailable.
(These were llm/retry.py's tests when it was a second engine.)"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agent_runtime.errors import LLMOutputError, LLMRateLimited, LLMRequestError, LLMUnavailable
from agent_runtime.llm.base import Completion, Usage
from agent_runtime.llm.factory import build_provider, call_policy
from agent_runtime.llm.sdk_base import SDKProvider
from agent_runtime.policies import DeliveryScope, Policy, PolicySpec, delivery_scope, is_transient

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    text: str


class _NoClient:
    async def close(self) -> None:
        pass


class Scripted(SDKProvider[_NoClient]):
    """An SDK provider whose attempts raise the scripted errors in order, then answer."""

    name = "scripted"
    default_model = "m"
    key_env = "SCRIPTED_TEST_KEY"
    base_url_env = "SCRIPTED_TEST_URL"

    def __init__(self, *errors: Exception, hang: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.errors = list(errors)
        self.hang = hang
        self.calls: list[float] = []

    def _make_client(self) -> _NoClient:
        return _NoClient()

    async def _attempt(
        self, system: str, prompt: str, schema: type[Any], max_tokens: int
    ) -> Completion[Any]:
        self.calls.append(time.monotonic())
        if self.hang:
            await anyio.sleep(self.hang)
        if self.errors:
            raise self.errors.pop(0)
        return Completion(schema(text="ok"), Usage(self.name, self.model))


def fast(retry: dict[str, Any] | None = None, **spec: Any) -> Policy:
    """Fast backoff; a Retry-After up to 30 s (``backoff_max``) is waited in-process."""
    base = {"attempts": 3, "backoff": 0.001, "backoff_max": 30, "jitter": 0.0}
    parsed = PolicySpec.model_validate({"retry": {**base, **(retry or {})}, **spec})
    return Policy("llm.scripted", parsed, retryable=is_transient)


def provider(*errors: Exception, policy: Policy | None = None, hang: float = 0.0) -> Scripted:
    return Scripted(*errors, policy=policy or fast(), hang=hang)


async def ask(llm: Scripted) -> str:
    completion = await llm.complete(system="s", prompt="p", schema=Answer)
    return completion.value.text


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTED_TEST_KEY", "k")


async def test_transient_errors_are_retried_until_success() -> None:
    llm = provider(LLMUnavailable("503"), LLMRateLimited("429"))
    assert await ask(llm) == "ok"
    assert len(llm.calls) == 3


async def test_gives_up_after_attempts_with_the_last_error() -> None:
    llm = provider(*[LLMUnavailable(f"down {n}") for n in range(5)])
    with pytest.raises(LLMUnavailable, match="down 2"):
        await ask(llm)
    assert len(llm.calls) == 3


@pytest.mark.parametrize(
    "error", [LLMOutputError("bad json"), LLMRequestError("400"), ValueError("bug")]
)
async def test_other_errors_are_not_retried(error: Exception) -> None:
    llm = provider(error)
    with pytest.raises(type(error)):
        await ask(llm)
    assert len(llm.calls) == 1


async def test_waits_at_least_retry_after() -> None:
    llm = provider(LLMRateLimited("429", retry_after=0.2))
    assert await ask(llm) == "ok"
    assert llm.calls[1] - llm.calls[0] >= 0.2


async def test_retry_after_beyond_the_longest_sleep_is_raised_at_once() -> None:
    llm = provider(LLMRateLimited("429", retry_after=60), policy=fast(retry={"backoff_max": 5}))
    with pytest.raises(LLMRateLimited):
        await ask(llm)
    assert len(llm.calls) == 1


async def test_never_sleeps_past_the_request_deadline() -> None:
    slow = fast(retry={"attempts": 3, "backoff": 1.0, "jitter": 0.0})
    llm = provider(LLMUnavailable("503"), policy=slow)
    with delivery_scope(DeliveryScope(time.monotonic() + 0.05)), pytest.raises(LLMUnavailable):
        await ask(llm)
    assert len(llm.calls) == 1


async def test_a_call_cut_by_its_timeout_is_the_provider_being_unavailable() -> None:
    cut = fast(retry={"attempts": 2}, timeout={"attempt": 0.05})
    llm = provider(policy=cut, hang=30)
    with pytest.raises(LLMUnavailable, match="cut by its timeout"):
        await ask(llm)
    assert len(llm.calls) == 2  # each attempt cut, then retried: a timeout is transient


def test_providers_get_the_named_call_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")

    class Named:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def call(self, name: str) -> Policy:
            self.asked.append(name)
            return fast()

    policies: Any = Named()
    default = build_provider({"provider": "anthropic"}, policies=policies)
    named = build_provider({"provider": "anthropic", "call": "llm.main"}, policies=policies)
    assert policies.asked == ["llm.anthropic", "llm.main"]
    assert getattr(default, "policy", None) is not None and getattr(named, "policy", None)
    assert call_policy("llm.x", None).breaker is None  # no worker policies: no breaker
