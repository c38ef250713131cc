"""The response cache and the cost ledger on the real embedded server, with a real provider
(Anthropic SDK) answering from a local fake API: a repeated question is not paid twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agent_runtime.errors import LLMOutputError
from agent_runtime.llm.accounting import CostLedger
from agent_runtime.llm.anthropic_provider import AnthropicProvider
from agent_runtime.llm.cache import CachedProvider
from agent_runtime.llm.retry import DefaultRetry
from agent_runtime.transport import connect
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.llm_store import RedisLLMStore
from tests.llmfakes.anthropic_api import AnthropicFake, tool_answer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Step(BaseModel):
    tool: str
    args: list[str]


class Other(BaseModel):
    tool: str


ANSWER = {"tool": "ls", "args": ["-l"]}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicFake]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    with AnthropicFake().running() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
async def cached(fake: AnthropicFake, redis: Any, prefix: str) -> AsyncIterator[CachedProvider]:
    inner = AnthropicProvider(base_url=fake.base_url, retry=DefaultRetry(attempts=1))
    provider = CachedProvider(inner, RedisLLMStore(redis), Keys(prefix), ttl=600)
    yield provider
    await provider.aclose()


async def _ask(
    provider: Any, prompt: str = "list files", schema: type[BaseModel] = Step, max_tokens: int = 256
) -> Any:
    return await provider.complete(
        system="plan", prompt=prompt, schema=schema, max_tokens=max_tokens
    )


async def test_second_identical_call_is_served_from_cache(
    cached: CachedProvider, fake: AnthropicFake
) -> None:
    fake.script(tool_answer(ANSWER, input_tokens=500, output_tokens=50))
    first = await _ask(cached)
    second = await _ask(cached)
    assert len(fake.requests) == 1
    assert first.value == second.value == Step(**ANSWER)
    assert first.usage.cost_usd > 0 and not first.usage.cached
    assert second.usage.cached and second.usage.cost_usd == 0
    assert (second.usage.input_tokens, second.usage.output_tokens) == (0, 0)
    assert second.usage.model == first.usage.model


async def test_any_difference_in_the_question_misses(
    cached: CachedProvider, fake: AnthropicFake
) -> None:
    fake.script(*[tool_answer(ANSWER)] * 3, tool_answer({"tool": "ls"}))
    await _ask(cached)
    await _ask(cached, prompt="list files please")
    await _ask(cached, max_tokens=128)
    await _ask(cached, schema=Other)
    assert len(fake.requests) == 4


async def test_entries_expire_with_the_configured_ttl(
    cached: CachedProvider, fake: AnthropicFake, redis: Any, prefix: str
) -> None:
    fake.script(tool_answer(ANSWER))
    await _ask(cached)
    [key] = [k async for k in redis.scan_iter(match=Keys(prefix).llm_cache("*"))]
    assert 0 < await redis.ttl(key) <= 600


async def test_invalid_answer_is_not_cached(cached: CachedProvider, fake: AnthropicFake) -> None:
    fake.script(tool_answer({"tool": 3}), tool_answer(ANSWER))
    with pytest.raises(LLMOutputError):
        await _ask(cached)
    assert (await _ask(cached)).value == Step(**ANSWER)
    assert len(fake.requests) == 2


async def test_cache_outage_degrades_to_an_uncached_call(
    fake: AnthropicFake, tmp_path: Path
) -> None:
    dead = Redis(unix_socket_path=str(tmp_path / "no.sock"), retry=Retry(NoBackoff(), 0))
    inner = AnthropicProvider(base_url=fake.base_url, retry=DefaultRetry(attempts=1))
    provider = CachedProvider(inner, RedisLLMStore(dead), Keys("x"), ttl=60)
    fake.script(tool_answer(ANSWER))
    try:
        assert (await _ask(provider)).value == Step(**ANSWER)
    finally:
        await provider.aclose()
        await dead.aclose()


async def test_redelivered_message_pays_once(
    cached: CachedProvider, fake: AnthropicFake, redis: Any, prefix: str
) -> None:
    """A message handled twice (its first worker died before the ack) calls the provider
    once and books its cost once."""
    ledger = CostLedger(RedisLLMStore(redis), Keys(prefix))
    cid, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    fake.script(tool_answer(ANSWER, input_tokens=1000, output_tokens=100))
    booked = []
    for _delivery in range(2):
        completion = await _ask(cached)
        booked.append(await ledger.record(cid, message_id, completion.usage))
    assert booked == [True, False]
    assert len(fake.requests) == 1
    summary = await ledger.summary(cid)
    assert (summary.tokens_in, summary.tokens_out, summary.calls) == (1000, 100, 1)
    assert summary.cost_usd == pytest.approx(0.001 + 0.0005)  # claude-haiku-4-5: $1 / $5
