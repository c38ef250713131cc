"""Price table lookups and the cost of one call."""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime.llm.base import Usage
from agent_runtime.llm.cost import Price, PriceTable


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("claude-sonnet-4-5", Price(3.0, 15.0)),
        ("claude-sonnet-4-5-20250929", Price(3.0, 15.0)),
        ("claude-opus-4-5-20251101", Price(5.0, 25.0)),
        ("claude-opus-4-20250514", Price(15.0, 75.0)),
        ("gpt-4o-mini-2024-07-18", Price(0.15, 0.60)),
        ("gpt-4o-2024-08-06", Price(2.5, 10.0)),
        ("gpt-4.1-nano", Price(0.10, 0.40)),
    ],
)
def test_exact_and_longest_prefix_match(model: str, price: Price) -> None:
    assert PriceTable().price("x", model) == price


def test_cost_is_per_million_tokens() -> None:
    usage = PriceTable().with_cost(Usage("anthropic", "claude-sonnet-4-5", 2_000, 500))
    assert usage.cost_usd == pytest.approx(2_000 * 3 / 1e6 + 500 * 15 / 1e6)


def test_unknown_model_is_free_and_warned_once() -> None:
    log = RecordingLog()
    table = PriceTable(log=log)
    for _ in range(3):
        assert table.with_cost(Usage("openai", "gpt-99-turbo", 10_000, 10_000)).cost_usd == 0
    assert [e for e, _ in log.events] == ["llm_price_unknown"]
    assert log.events[0][1]["model"] == "gpt-99-turbo"


def test_prefix_needs_a_dash_boundary() -> None:
    log = RecordingLog()
    assert PriceTable(log=log).price("openai", "o3x") == Price(0, 0)
    assert log.events


def test_overrides_win_and_rules_and_cached_calls_are_free() -> None:
    table = PriceTable({"claude-sonnet-4-5": Price(1.0, 2.0), "my-model": Price(10, 10)})
    assert table.price("anthropic", "claude-sonnet-4-5-20250929") == Price(1.0, 2.0)
    assert table.with_cost(Usage("vllm", "my-model", 1_000_000, 0)).cost_usd == 10
    assert table.with_cost(Usage("rules", "rules", 10**6, 10**6)).cost_usd == 0
    cached = Usage("anthropic", "claude-sonnet-4-5", 100, 100, cost_usd=9.0, cached=True)
    assert table.with_cost(cached).cost_usd == 0
