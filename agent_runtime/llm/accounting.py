"""Per-request token and cost accounting in Redis, and the budget check.

One hash per request, ``keys.request_state(cid, "cost")`` (hash-tagged by the correlation
id, so it is one slot), with the fields::

    tokens_in, tokens_out, cost_usd, calls, cached_calls      totals of the request
    by:PROVIDER:MODEL:tokens_in|tokens_out|cost_usd|calls      the same per provider:model
    msg:MESSAGE_ID:CALL                                        "1" once that call is booked

Booking is one Lua script: ``HSETNX`` of the per-message field, and only if it was new, the
increments. A message handled twice (redelivered, reclaimed) therefore books each of its
calls once -- ``call`` numbers the LLM calls one handling makes (0, 1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent_runtime.errors import BudgetExceeded
from agent_runtime.llm.base import Usage
from agent_runtime.transport.keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_TTL = 7 * 24 * 3600

_BOOK = """
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then return 0 end
local by = 'by:' .. ARGV[2] .. ':'
redis.call('HINCRBY', KEYS[1], 'tokens_in', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'tokens_out', ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('HINCRBY', KEYS[1], 'cached_calls', ARGV[6])
redis.call('HINCRBY', KEYS[1], by .. 'tokens_in', ARGV[3])
redis.call('HINCRBY', KEYS[1], by .. 'tokens_out', ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[1], by .. 'cost_usd', ARGV[5])
redis.call('HINCRBY', KEYS[1], by .. 'calls', 1)
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""


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

    def __init__(self, redis: Redis, keys: Keys, *, ttl: int = DEFAULT_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._book = redis.register_script(_BOOK)

    async def record(
        self, correlation_id: str, message_id: str, usage: Usage, *, call: int = 0
    ) -> bool:
        """Book ``usage``; False if this message's call ``call`` was booked before."""
        args: list[str | int] = [
            f"msg:{message_id}:{call}",
            f"{usage.provider}:{usage.model}",
            usage.input_tokens,
            usage.output_tokens,
            f"{usage.cost_usd:.12f}",
            1 if usage.cached else 0,
            self._ttl,
        ]
        key = self._keys.request_state(correlation_id, "cost")
        return bool(await self._book(keys=[key], args=args))

    async def summary(self, correlation_id: str) -> CostSummary:
        raw = await self._redis.hgetall(self._keys.request_state(correlation_id, "cost"))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return CostSummary(
            tokens_in=int(fields.get("tokens_in", 0)),
            tokens_out=int(fields.get("tokens_out", 0)),
            cost_usd=float(fields.get("cost_usd", 0.0)),
            calls=int(fields.get("calls", 0)),
            cached_calls=int(fields.get("cached_calls", 0)),
            by_model=_by_model(fields),
        )

    async def spent(self, correlation_id: str) -> float:
        raw = await self._redis.hget(self._keys.request_state(correlation_id, "cost"), "cost_usd")
        return float(_text(raw)) if raw is not None else 0.0


def check_budget(budget_usd: float | None, spent: float) -> None:
    """Raise :class:`BudgetExceeded` once ``spent`` is over ``budget_usd`` (None: no budget).
    Spending exactly the budget is allowed."""
    if budget_usd is not None and spent > budget_usd:
        raise BudgetExceeded(budget_usd, spent)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
