"""The fleet's shared rate limits, as Lua scripts (the waiting side is
agent_runtime/policies/ratelimit.py).

A limit has one or more *meters* (``requests``, ``tokens``); each meter is a sorted set of
entries scored by the entry's **end time** (server ms) and a hash of their weights (field
``_sum`` holds the total). An entry is one call: admitted with the provisional end
``now + lease`` (the longest the call can take), stamped with its real end when it finishes
(:data:`SETTLE`). A meter counts every entry whose end is at most ``window`` ms ago, so a call
occupies its place from its admission until ``window`` after it ended: whatever the network
latency, the provider's own count over any ``window`` never exceeds the limit (the proof is in
docs/llm.md, "Fleet rate limits").

Each script takes the time from the server (``TIME``), touches only the keys of one limit
(hash tag ``{NAME}``: Redis Cluster safe), and is atomic: admission to every meter of a limit
is all or nothing. Scripts are run by SHA (redis-py ``register_script``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: zset, hash per meter. ARGV: member, window_ms, lease_ms, ttl_ms, then limit, cost per
#: meter. Returns {status, wait_ms, least_wait_ms, now_ms}: status 1 admitted; 0 full (wait_ms:
#: until a place frees if running calls take their whole lease; least_wait_ms: if they all
#: ended now); -1 the cost is above the limit (wait_ms: the meter's 1-based index).
ACQUIRE = (
    _NOW
    + """
local member, window = ARGV[1], tonumber(ARGV[2])
local lease, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local wait, least = 0, 0
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if cost > limit then return {-1, i, 0, now} end
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. (now - window))
  if #old > 0 then
    local gone = 0
    for j = 1, #old, 500 do
      local part = {unpack(old, j, math.min(j + 499, #old))}
      for _, w in ipairs(redis.call('HMGET', h, unpack(part))) do
        gone = gone + (tonumber(w) or 0)
      end
      redis.call('HDEL', h, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. (now - window))
    redis.call('HINCRBY', h, '_sum', -gone)
  end
  local used = tonumber(redis.call('HGET', h, '_sum')) or 0
  if used + cost > limit then
    local need, freed, found = used + cost - limit, 0, false
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', h, entries[j])) or 0)
      if freed >= need then
        local ends = tonumber(entries[j + 1])
        wait = math.max(wait, ends + window + 1 - now)
        least = math.max(least, math.min(ends, now) + window + 1 - now)
        found = true
        break
      end
    end
    if not found then
      wait = math.max(wait, window)
      least = math.max(least, window)
    end
  end
end
if wait > 0 then return {0, wait, least, now} end
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local cost = tonumber(ARGV[4 + 2 * i])
  redis.call('ZADD', z, now + lease, member)
  redis.call('HSET', h, member, cost)
  redis.call('HINCRBY', h, '_sum', cost)
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', h, ttl)
end
return {1, 0, 0, now}
"""
)

#: KEYS: as ACQUIRE. ARGV: member, then per meter the real cost ('' keeps the reserved one).
#: The entry's end becomes now (rounded up to the next ms) unless it is already earlier.
SETTLE = (
    _NOW
    + """
now = now + 1
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local ends = redis.call('ZSCORE', z, ARGV[1])
  if ends then
    if tonumber(ends) > now then redis.call('ZADD', z, now, ARGV[1]) end
    local cost = ARGV[1 + i]
    if cost ~= '' then
      local old = tonumber(redis.call('HGET', h, ARGV[1])) or 0
      redis.call('HSET', h, ARGV[1], cost)
      redis.call('HINCRBY', h, '_sum', tonumber(cost) - old)
    end
  end
end
return 1
"""
)

#: KEYS: as ACQUIRE. ARGV: window_ms. Returns {now_ms, count, weight, ...} per meter: the
#: entries that count now (ended within the window, or running). Reads only.
USAGE = (
    _NOW
    + """
local out = {now}
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local live = redis.call('ZRANGEBYSCORE', z, now - tonumber(ARGV[1]), '+inf')
  local weight = 0
  for j = 1, #live, 500 do
    local part = {unpack(live, j, math.min(j + 499, #live))}
    for _, w in ipairs(redis.call('HMGET', h, unpack(part))) do
      weight = weight + (tonumber(w) or 0)
    end
  end
  out[#out + 1] = #live
  out[#out + 1] = weight
end
return out
"""
)


#: KEYS: the limit's stats hash. ARGV: field, amount, ... (HINCRBY each), ttl_s. The fleet's
#: count of calls that waited, their total wait (ms) and refusals, for ``status``.
STATS = """
for i = 1, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV])
return 1
"""
#: Keep a limit's stats this long after its last wait.
STATS_TTL_SECONDS = 7 * 24 * 3600


def meter_keys(keys: Any, name: str, meters: list[str]) -> list[str]:
    """The scripts' KEYS for limit ``name``: each meter's zset and its weight hash."""
    return [
        k
        for meter in meters
        for k in (keys.rate_limit(name, meter), keys.rate_limit(name, meter) + ":w")
    ]


@dataclass(frozen=True, slots=True)
class Grant:
    """ACQUIRE's answer. ``status``: 1 admitted, 0 wait, -1 never (cost above the limit)."""

    status: int
    wait_ms: int
    least_wait_ms: int
    now_ms: int


class RedisRateLimits:
    """The scripts above on a redis-py client (or the in-memory transport's)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._stats = redis.register_script(STATS)
        self._acquire = redis.register_script(ACQUIRE)
        self._settle = redis.register_script(SETTLE)
        self._usage = redis.register_script(USAGE)

    async def acquire(
        self,
        keys: list[str],
        member: str,
        *,
        window_ms: int,
        lease_ms: int,
        costs: list[tuple[int, int]],
    ) -> Grant:
        """Admit ``member`` with ``costs`` ((limit, cost) per meter, in ``keys`` order: a zset
        and its weight hash per meter), or say how long to wait."""
        args: list[Any] = [member, window_ms, lease_ms, window_ms + lease_ms + 60_000]
        for limit, cost in costs:
            args += [limit, cost]
        status, wait, least, now = await self._acquire(keys=keys, args=args)
        return Grant(int(status), int(wait), int(least), int(now))

    async def settle(self, keys: list[str], member: str, costs: list[int | None]) -> None:
        """``member``'s call ended now; ``costs``: its real cost per meter (None: keep)."""
        args = [member, *("" if c is None else c for c in costs)]
        await self._settle(keys=keys, args=args)

    async def usage(self, keys: list[str], window_ms: int) -> tuple[int, list[tuple[int, int]]]:
        """Server ms and, per meter, (entries, weight) counting now."""
        raw = [int(x) for x in await self._usage(keys=keys, args=[window_ms])]
        return raw[0], [(raw[i], raw[i + 1]) for i in range(1, len(raw) - 1, 2)]

    async def count(self, key: str, fields: dict[str, int]) -> None:
        """Add ``fields`` to the limit's stats hash ``key`` (one script, atomic)."""
        args: list[Any] = [x for pair in fields.items() for x in pair]
        await self._stats(keys=[key], args=[*args, STATS_TTL_SECONDS])

    async def stats(self, key: str) -> dict[str, int]:
        raw = await self._redis.hgetall(key)
        return {_text(k): int(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
