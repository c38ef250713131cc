"""Per-request cost accounting on the real embedded server: totals, per-model breakdown,
idempotency per (message, call) under concurrency, TTL, and the budget check."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_runtime.errors import AgentRuntimeError, BudgetExceeded
from agent_runtime.llm.accounting import CostLedger
from agent_runtime.llm.base import Usage
from agent_runtime.transport import connect
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.llm_store import RedisLLMStore

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SONNET = Usage("anthropic", "claude-sonnet-4-5", 1000, 200, cost_usd=0.006)
MINI = Usage("openai", "gpt-4.1-mini", 2000, 100, cost_usd=0.00096)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


@pytest.fixture
def cid() -> str:
    return str(uuid.uuid4())


async def test_totals_and_breakdown_by_provider_and_model(
    redis: Any, prefix: str, cid: str
) -> None:
    ledger = CostLedger(RedisLLMStore(redis), Keys(prefix))
    await ledger.record(cid, "m1", SONNET)
    await ledger.record(cid, "m2", MINI)
    await ledger.record(cid, "m3", SONNET)
    await ledger.record(cid, "m4", Usage("anthropic", "claude-sonnet-4-5", cached=True))
    summary = await ledger.summary(cid)
    assert (summary.tokens_in, summary.tokens_out) == (4000, 500)
    assert summary.cost_usd == pytest.approx(0.006 * 2 + 0.00096)
    assert (summary.calls, summary.cached_calls) == (4, 1)
    sonnet = summary.by_model["anthropic:claude-sonnet-4-5"]
    assert (sonnet.tokens_in, sonnet.calls) == (2000, 3)
    assert sonnet.cost_usd == pytest.approx(0.012)
    assert summary.by_model["openai:gpt-4.1-mini"].tokens_out == 100
    assert await ledger.spent(cid) == pytest.approx(summary.cost_usd)


async def test_each_call_of_a_message_books_once_even_concurrently(
    redis: Any, prefix: str, cid: str
) -> None:
    ledger = CostLedger(RedisLLMStore(redis), Keys(prefix))
    results = await asyncio.gather(
        *[ledger.record(cid, "m1", SONNET) for _ in range(10)],
        *[ledger.record(cid, "m1", MINI, call=1) for _ in range(10)],
    )
    assert sum(results) == 2
    summary = await ledger.summary(cid)
    assert summary.calls == 2
    assert summary.cost_usd == pytest.approx(0.006 + 0.00096)


async def test_cost_hash_is_per_request_and_expires(redis: Any, prefix: str, cid: str) -> None:
    keys = Keys(prefix)
    ledger = CostLedger(RedisLLMStore(redis), keys, ttl=300)
    await ledger.record(cid, "m1", SONNET)
    assert 0 < await redis.ttl(keys.request_state(cid, "cost")) <= 300
    other = await ledger.summary(str(uuid.uuid4()))
    assert (other.calls, other.cost_usd, other.by_model) == (0, 0.0, {})


async def test_budget_check_against_what_was_spent(redis: Any, prefix: str, cid: str) -> None:
    ledger = CostLedger(RedisLLMStore(redis), Keys(prefix))
    await ledger.record(cid, "m1", SONNET)
    assert await ledger.spent(cid) <= 0.01  # within the budget
    await ledger.record(cid, "m2", SONNET)
    spent = await ledger.spent(cid)
    assert spent > 0.01
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.012000 of \$0\.010000") as caught:
        raise BudgetExceeded(0.01, spent)
    assert isinstance(caught.value, AgentRuntimeError)
    assert caught.value.spent_usd == pytest.approx(0.012)
