"""The LLM response cache's and the cost ledger's Redis commands (agent_runtime/llm/cache.py
and llm/accounting.py keep the logic: keys, entry format, what a field means).

Booking is one Lua script: ``HSETNX`` of the per-message field, and only if it was new, the
increments; so a message handled twice books each of its calls once.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from agent_runtime.errors import TransportError

BOOK_SCRIPT = """
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


class CacheUnavailable(TransportError):
    """The response cache could not be read or written (the call goes on uncached)."""


class RedisLLMStore:
    """:class:`~agent_runtime.transport.base.LLMStore` on a redis-py client."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._book = redis.register_script(BOOK_SCRIPT)

    async def cache_get(self, key: str) -> bytes | None:
        try:
            raw: bytes | None = await self._redis.get(key)
        except RedisError as exc:
            raise CacheUnavailable(type(exc).__name__) from exc
        return raw

    async def cache_put(self, key: str, entry: str, ttl: int) -> None:
        """Store ``entry`` unless one is there already (the first answer wins)."""
        try:
            await self._redis.set(key, entry, ex=ttl, nx=True)
        except RedisError as exc:
            raise CacheUnavailable(type(exc).__name__) from exc

    async def book(self, key: str, marker: str, model: str, usage: list[str | int]) -> bool:
        """Add ``usage`` (tokens in, tokens out, cost, cached 0/1, ttl) to the ledger ``key``
        once per ``marker``; False if ``marker`` was booked before."""
        return bool(await self._book(keys=[key], args=[marker, model, *usage]))

    async def ledger(self, key: str) -> dict[str, str]:
        raw = await self._redis.hgetall(key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def ledger_field(self, key: str, name: str) -> str | None:
        raw = await self._redis.hget(key, name)
        return None if raw is None else _text(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
