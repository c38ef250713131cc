"""The Anthropic and OpenAI providers through their real SDKs, pointed at local servers that
speak each API's wire format (tests/llmfakes). Nothing here touches the network."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agent_runtime.errors import LLMOutputError, LLMRateLimited, LLMRequestError, LLMUnavailable
from agent_runtime.llm.anthropic_provider import AnthropicProvider
from agent_runtime.llm.openai_provider import OpenAIProvider
from agent_runtime.policies import DeliveryScope, Policy, PolicySpec, delivery_scope, is_transient
from tests.llmfakes import anthropic_api, openai_api
from tests.llmfakes.server import FakeAPI, Reply

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def call_policy(attempts: int = 3) -> Policy:
    """The call policy LLM calls run under (no breaker): fast backoff, Retry-After up to 30 s
    waited in-process."""
    retry = {"attempts": attempts, "backoff": 0.01, "backoff_max": 30, "jitter": 0.0}
    return Policy("llm.test", PolicySpec.model_validate({"retry": retry}), retryable=is_transient)


FAST = call_policy()


class Intent(BaseModel):
    action: str
    target: str
    confidence: float = Field(ge=0, le=1)


GOOD = {"action": "list_files", "target": "/tmp", "confidence": 0.9}


@dataclass
class Vendor:
    """What differs between the two APIs, behind one face for the shared tests."""

    name: str
    fake: FakeAPI
    make: Callable[..., Any]
    good: Callable[[Any], Reply]
    error: Callable[[int, dict[str, str]], Reply]
    not_json: Reply

    def provider(self, **options: Any) -> Any:
        options.setdefault("policy", FAST)
        options.setdefault("base_url", self.fake.base_url)  # type: ignore[attr-defined]
        return self.make(**options)


def _anthropic(fake: FakeAPI) -> Vendor:
    return Vendor(
        "anthropic",
        fake,
        AnthropicProvider,
        lambda value: anthropic_api.tool_answer(value, input_tokens=1000, output_tokens=200),
        lambda status, headers: anthropic_api.error(status, "api_error", "boom", headers),
        anthropic_api.text_answer("I think you want to list files."),
    )


def _openai(fake: FakeAPI) -> Vendor:
    return Vendor(
        "openai",
        fake,
        OpenAIProvider,
        lambda value: openai_api.json_answer(value, prompt_tokens=1000, completion_tokens=200),
        lambda status, headers: openai_api.error(status, "server_error", "boom", headers),
        openai_api.json_answer('{"action": "list_files", "target": '),
    )


@pytest.fixture(params=["anthropic", "openai"])
def vendor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vendor]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test-key")
    if request.param == "anthropic":
        fake: FakeAPI = anthropic_api.AnthropicFake()
        build = _anthropic
    else:
        fake = openai_api.OpenAIFake()
        build = _openai
    with fake.running():
        yield build(fake)


async def _complete(provider: Any, prompt: str = "list the files in /tmp") -> Any:
    try:
        return await provider.complete(
            system="Parse the request.", prompt=prompt, schema=Intent, max_tokens=512
        )
    finally:
        await provider.aclose()


async def test_structured_answer_is_validated_and_costed(vendor: Vendor) -> None:
    vendor.fake.script(vendor.good(GOOD))
    completion = await _complete(vendor.provider())
    assert completion.value == Intent(**GOOD)
    usage = completion.usage
    assert (usage.provider, usage.input_tokens, usage.output_tokens) == (vendor.name, 1000, 200)
    # list prices: claude-haiku-4-5 $1/$5, gpt-4.1-mini $0.40/$1.60 per million tokens
    expected = 0.001 + 0.001 if vendor.name == "anthropic" else 0.0004 + 0.00032
    assert usage.cost_usd == pytest.approx(expected)
    assert not usage.cached


async def test_request_carries_schema_system_prompt_and_key(vendor: Vendor) -> None:
    vendor.fake.script(vendor.good(GOOD))
    await _complete(vendor.provider())
    [sent] = vendor.fake.requests
    body = sent.body
    if vendor.name == "anthropic":
        # the SDK sends the key as x-api-key or as a bearer token, depending on its version
        assert "sk-ant-test-key" in (
            sent.headers.get("x-api-key"),
            sent.headers.get("authorization", "").removeprefix("Bearer "),
        )
        [tool] = body["tools"]
        assert body["tool_choice"] == {"type": "tool", "name": tool["name"]}
        assert set(tool["input_schema"]["required"]) == {"action", "target", "confidence"}
        assert body["system"] == "Parse the request."
    else:
        assert sent.headers["authorization"] == "Bearer sk-openai-test-key"
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        assert fmt["json_schema"]["schema"]["additionalProperties"] is False
        assert body["messages"][0] == {"role": "system", "content": "Parse the request."}
    assert body["max_tokens" if vendor.name == "anthropic" else "max_completion_tokens"] == 512


async def test_answer_that_is_not_json_raises_output_error_without_retry(vendor: Vendor) -> None:
    vendor.fake.script(vendor.not_json)
    with pytest.raises(LLMOutputError) as caught:
        await _complete(vendor.provider())
    assert len(vendor.fake.requests) == 1
    assert caught.value.usage is not None and caught.value.usage.input_tokens > 0


async def test_answer_that_mismatches_the_schema_raises_output_error(vendor: Vendor) -> None:
    vendor.fake.script(vendor.good({"action": "list_files", "confidence": 7}))
    with pytest.raises(LLMOutputError, match=r"does not match Intent.*target.*confidence"):
        await _complete(vendor.provider())
    assert len(vendor.fake.requests) == 1


async def test_429_waits_at_least_retry_after_then_succeeds(vendor: Vendor) -> None:
    vendor.fake.script(vendor.error(429, {"retry-after": "1"}), vendor.good(GOOD))
    completion = await _complete(vendor.provider())
    assert completion.value == Intent(**GOOD)
    first, second = vendor.fake.requests
    assert second.at - first.at >= 0.95


async def test_429_with_long_retry_after_is_raised_for_redelivery(vendor: Vendor) -> None:
    vendor.fake.script(vendor.error(429, {"retry-after": "120"}))
    with pytest.raises(LLMRateLimited) as caught:
        await _complete(vendor.provider())
    assert caught.value.retry_after == pytest.approx(120)
    assert len(vendor.fake.requests) == 1


async def test_429_wait_past_deadline_is_not_attempted(vendor: Vendor) -> None:
    vendor.fake.script(vendor.error(429, {"retry-after-ms": "2000"}), vendor.good(GOOD))
    deadline = DeliveryScope(time.monotonic() + 1.0)  # the request's deadline, 1 s away
    with delivery_scope(deadline), pytest.raises(LLMRateLimited):
        await _complete(vendor.provider())
    assert len(vendor.fake.requests) == 1


async def test_server_error_then_success(vendor: Vendor) -> None:
    vendor.fake.script(vendor.error(500, {}), vendor.good(GOOD))
    completion = await _complete(vendor.provider())
    assert completion.value == Intent(**GOOD)
    assert len(vendor.fake.requests) == 2


async def test_persistent_server_error_gives_up_after_attempts(vendor: Vendor) -> None:
    vendor.fake.script(*[vendor.error(503, {})] * 5)
    with pytest.raises(LLMUnavailable, match="HTTP 503"):
        await _complete(vendor.provider())
    assert len(vendor.fake.requests) == FAST.spec.retry.attempts


async def test_bad_request_is_not_retried(vendor: Vendor) -> None:
    vendor.fake.script(vendor.error(400, {}), vendor.good(GOOD))
    with pytest.raises(LLMRequestError, match="HTTP 400"):
        await _complete(vendor.provider())
    assert len(vendor.fake.requests) == 1


async def test_slow_server_times_out_as_unavailable(vendor: Vendor) -> None:
    slow = vendor.good(GOOD)
    vendor.fake.script(Reply(slow.status, slow.body, slow.headers, delay=3.0))
    provider = vendor.provider(timeout=0.3, policy=call_policy(1))
    with pytest.raises(LLMUnavailable, match="unreachable"):
        await _complete(provider)


async def test_unreachable_server_is_unavailable(vendor: Vendor) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = vendor.provider(base_url=f"http://127.0.0.1:{port}/v1", policy=call_policy(1))
    with pytest.raises(LLMUnavailable, match="unreachable"):
        await _complete(provider)
    assert vendor.fake.requests == []


async def test_the_pipelines_intent_schema_round_trips(vendor: Vendor) -> None:
    from protocols.pipeline import ParsedIntent

    answer = {
        "actions": [
            {"action": "list_files", "target": "configs", "parameters": {}, "after": []},
            {
                "action": "read_file",
                "target": "configs/policy.yaml",
                "parameters": {},
                "after": [0],
            },
        ],
        "confidence": 0.8,
    }
    backwards = {**answer, "actions": [{**answer["actions"][1], "after": [1]}]}  # type: ignore[dict-item]
    vendor.fake.script(vendor.good(answer), vendor.good(backwards))
    provider = vendor.provider()
    try:
        completion = await provider.complete(system="s", prompt="p", schema=ParsedIntent)
        assert completion.value == ParsedIntent.model_validate(answer)
        with pytest.raises(LLMOutputError, match="does not precede"):
            await provider.complete(system="s", prompt="p2", schema=ParsedIntent)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (anthropic_api.tool_answer(GOOD, stop_reason="max_tokens"), "truncated"),
        (anthropic_api.text_answer("Sure! Here are your files."), "no Intent tool call"),
    ],
)
async def test_anthropic_truncated_or_toolless_answers_are_output_errors(
    monkeypatch: pytest.MonkeyPatch, reply: Reply, complaint: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    with anthropic_api.AnthropicFake().running() as fake:
        fake.script(reply)
        provider = AnthropicProvider(base_url=fake.root_url, policy=FAST)
        with pytest.raises(LLMOutputError, match=complaint):
            await _complete(provider)


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (openai_api.json_answer(GOOD, refusal="I can't help with that."), "refused"),
        (openai_api.json_answer('{"action": "li', finish_reason="length"), "truncated"),
    ],
)
async def test_openai_refusals_and_truncation_are_output_errors(
    monkeypatch: pytest.MonkeyPatch, reply: Reply, complaint: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test-key")
    with openai_api.OpenAIFake().running() as fake:
        fake.script(reply)
        provider = OpenAIProvider(base_url=fake.root_url + "/v1", policy=FAST)
        with pytest.raises(LLMOutputError, match=complaint):
            await _complete(provider)
