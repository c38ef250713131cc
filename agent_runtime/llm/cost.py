"""Token prices per model and the cost of one call.

The table below is the one place to edit prices: USD per **million** tokens, input and
output, list prices as published by the vendors (checked 2025; verify before relying on
them for billing). A model is matched exactly or by the longest listed prefix, so dated
snapshots (``claude-sonnet-4-5-20250929``, ``gpt-4o-2024-08-06``) use their family's price.
A model that is not listed costs 0 and logs ``llm_price_unknown`` once per table instance;
a pipeline can add or override prices with ``llm: {price: {input: X, output: Y}}``.
The offline ``rules`` provider is always free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import structlog

from agent_runtime.llm.base import Usage

FREE_PROVIDERS = frozenset({"rules"})


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


#: model (or model-family prefix) -> price. Edit here; keep families before snapshots.
DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # Anthropic
        "claude-opus-4-5": Price(5.00, 25.00),
        "claude-opus-4-1": Price(15.00, 75.00),
        "claude-opus-4": Price(15.00, 75.00),
        "claude-sonnet-4-5": Price(3.00, 15.00),
        "claude-sonnet-4": Price(3.00, 15.00),
        "claude-3-7-sonnet": Price(3.00, 15.00),
        "claude-haiku-4-5": Price(1.00, 5.00),
        "claude-3-5-haiku": Price(0.80, 4.00),
        "claude-3-haiku": Price(0.25, 1.25),
        # OpenAI
        "gpt-5": Price(1.25, 10.00),
        "gpt-5-mini": Price(0.25, 2.00),
        "gpt-5-nano": Price(0.05, 0.40),
        "gpt-4.1": Price(2.00, 8.00),
        "gpt-4.1-mini": Price(0.40, 1.60),
        "gpt-4.1-nano": Price(0.10, 0.40),
        "gpt-4o": Price(2.50, 10.00),
        "gpt-4o-mini": Price(0.15, 0.60),
        "o3": Price(2.00, 8.00),
        "o3-mini": Price(1.10, 4.40),
        "o4-mini": Price(1.10, 4.40),
    }
)


class PriceTable:
    """Looks up prices; ``overrides`` (model -> Price) win over the defaults."""

    def __init__(self, overrides: Mapping[str, Price] | None = None, *, log: Any = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._log = log or structlog.get_logger("agent_runtime.llm")
        self._warned: set[str] = set()

    def price(self, provider: str, model: str) -> Price:
        if provider in FREE_PROVIDERS:
            return Price(0.0, 0.0)
        found = self._lookup(model)
        if found is None:
            if model not in self._warned:
                self._warned.add(model)
                self._log.warning(
                    "llm_price_unknown",
                    provider=provider,
                    model=model,
                    hint="add it to agent_runtime/llm/cost.py or llm.price",
                )
            return Price(0.0, 0.0)
        return found

    def _lookup(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        prefixes = [p for p in self._prices if model.startswith(p + "-")]
        return self._prices[max(prefixes, key=len)] if prefixes else None

    def with_cost(self, usage: Usage) -> Usage:
        """``usage`` with ``cost_usd`` computed from its tokens (0 for cached answers)."""
        if usage.cached:
            return replace(usage, cost_usd=0.0)
        price = self.price(usage.provider, usage.model)
        return replace(usage, cost_usd=price.cost(usage.input_tokens, usage.output_tokens))
