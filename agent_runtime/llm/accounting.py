"""Per-request token and cost accounting in Redis, and the budget check.

One hash per request, ``keys.request_state(cid, "cost")`` (hash-tagged by the correlation
id, so it is one slot), with the fields::

    tokens_in, tokens_out, cost_usd, calls, cached_calls      totals of the request
    by:PROVIDER:MODEL:tokens_in|tokens_out|cost_usd|calls      the same per provider:model
    msg:MESSAGE_ID:CALL                                        "1" once that call is booked

Booking is one Lua script (agent_runtime/transport/llm_store.py): ``HSETNX`` of the
per-message field, and only if it was new, the increments. A message handled twice
(redelivered, reclaimed) therefore books each of its calls once -- ``call`` numbers the LLM
calls one handling makes (0, 1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_runtime.llm.base import Usage
from agent_runtime.transport.base import LLMStore
from agent_runtime.transport.keys import Keys

DEFAULT_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class ModelCost:
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    calls: int = 0


@dataclass(frozen=True, slots=True)
class CostSummary:
    """What one request has spent so far; ``by_model`` is keyed ``"provider:model"``."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    by_model: dict[str, ModelCost] = field(default_factory=dict)


class CostLedger:
    """Books LLM usage per request, idempotently per (message id, call number)."""

    def __init__(self, store: LLMStore, keys: Keys, *, ttl: int = DEFAULT_TTL) -> None:
        self._store = store
        self._keys = keys
        self._ttl = ttl

    async def record(
        self, correlation_id: str, message_id: str, usage: Usage, *, call: int = 0
    ) -> bool:
        """Book ``usage``; False if this message's call ``call`` was booked before."""
        amounts: list[str | int] = [
            usage.input_tokens,
            usage.output_tokens,
            f"{usage.cost_usd:.12f}",
            1 if usage.cached else 0,
            self._ttl,
        ]
        key = self._keys.request_state(correlation_id, "cost")
        marker = f"msg:{message_id}:{call}"
        return await self._store.book(key, marker, f"{usage.provider}:{usage.model}", amounts)

    async def summary(self, correlation_id: str) -> CostSummary:
        fields = await self._store.ledger(self._keys.request_state(correlation_id, "cost"))
        return CostSummary(
            tokens_in=int(fields.get("tokens_in", 0)),
            tokens_out=int(fields.get("tokens_out", 0)),
            cost_usd=float(fields.get("cost_usd", 0.0)),
            calls=int(fields.get("calls", 0)),
            cached_calls=int(fields.get("cached_calls", 0)),
            by_model=_by_model(fields),
        )

    async def spent(self, correlation_id: str) -> float:
        key = self._keys.request_state(correlation_id, "cost")
        raw = await self._store.ledger_field(key, "cost_usd")
        return float(raw) if raw is not None else 0.0


def _by_model(fields: dict[str, str]) -> dict[str, ModelCost]:
    grouped: dict[str, dict[str, str]] = {}
    for name, value in fields.items():
        if name.startswith("by:"):
            provider_model, metric = name[3:].rsplit(":", 1)
            grouped.setdefault(provider_model, {})[metric] = value
    return {
        pm: ModelCost(
            tokens_in=int(m.get("tokens_in", 0)),
            tokens_out=int(m.get("tokens_out", 0)),
            cost_usd=float(m.get("cost_usd", 0.0)),
            calls=int(m.get("calls", 0)),
        )
        for pm, m in grouped.items()
    }
