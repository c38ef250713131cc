"""The shared circuit-breaker state machine, as Lua scripts on one hash per breaker (the
policy side is agent_runtime/policies/breaker.py).

Each script touches one key (``keys.breaker(NAME)``), so it is atomic and Redis Cluster safe,
and takes the time from the server (``TIME``): every worker of the fleet sees one breaker, and
no worker's local clock decides when it opens or may be probed.

Hash fields: ``state`` (closed | open | half-open), ``failures`` (consecutive failures),
``opened_at_ms`` and ``reset_ms`` (server time it opened, its reset timeout), ``trips`` (times
it opened), ``changed_at_ms``, and while half-open the probe lock: ``probe`` (the prober's
token) and ``probe_until_ms`` (when the lock lapses, if the prober died). The lock is
set-if-absent with an expiry, like ``SET NX PX``, but inside the breaker's own hash so that
state and lock change together.
"""

from __future__ import annotations

from typing import Any

#: Keep an idle breaker's hash this long after its last change (a lapsed hash = closed).
HASH_TTL_SECONDS = 7 * 24 * 3600

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: ARGV: token, reset_ms, probe_ms, ttl_s.
#: Returns {decision, state, wait_ms, failures}; decision: call | probe | open | busy.
ACQUIRE = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at_ms', 'probe_until_ms')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
if state == 'closed' then return {'call', state, 0, failures} end
if state == 'open' then
  local left = (tonumber(h[3]) or 0) + tonumber(ARGV[2]) - now
  if left > 0 then return {'open', state, left, failures} end
else
  local held = (tonumber(h[4]) or 0) - now
  if held > 0 then return {'busy', state, held, failures} end
end
redis.call('HSET', KEYS[1], 'state', 'half-open', 'probe', ARGV[1],
           'probe_until_ms', now + tonumber(ARGV[3]), 'changed_at_ms', now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {'probe', 'half-open', 0, failures}
"""
)

#: ARGV: token, outcome (success | failure), fail_max, reset_ms, ttl_s.
#: Returns {state_before, state_after, failures}.
RECORD = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'probe')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local key, outcome = KEYS[1], ARGV[2]
local function open()
  redis.call('HSET', key, 'state', 'open', 'opened_at_ms', now, 'reset_ms', ARGV[4],
             'changed_at_ms', now)
  redis.call('HDEL', key, 'probe', 'probe_until_ms')
  redis.call('HINCRBY', key, 'trips', 1)
  redis.call('EXPIRE', key, tonumber(ARGV[5]))
end
if state == 'half-open' and h[3] == ARGV[1] then
  if outcome == 'success' then
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'changed_at_ms', now)
    redis.call('HDEL', key, 'probe', 'probe_until_ms')
    return {state, 'closed', 0}
  end
  open()
  return {state, 'open', failures}
end
if state ~= 'closed' then return {state, state, failures} end
if outcome == 'success' then
  if failures > 0 then redis.call('HSET', key, 'failures', 0) end
  return {state, state, 0}
end
failures = redis.call('HINCRBY', key, 'failures', 1)
redis.call('EXPIRE', key, tonumber(ARGV[5]))
if failures >= tonumber(ARGV[3]) then
  open()
  return {state, 'open', failures}
end
return {state, state, failures}
"""
)

#: ARGV: token. A cancelled prober gives its lock back (the state stays half-open).
RELEASE = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until_ms')
  return 1
end
return 0
"""


class RedisBreakers:
    """:class:`~agent_runtime.transport.base.BreakerStore` on a redis-py client: the scripts
    above, and a read of the hash with the server's time (status views, tests)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._acquire = redis.register_script(ACQUIRE)
        self._record = redis.register_script(RECORD)
        self._release = redis.register_script(RELEASE)

    async def acquire(
        self, key: str, token: str, reset_ms: int, probe_ms: int
    ) -> tuple[str, str, int, int]:
        """``(decision, state, wait ms, failures)``; decision: call | probe | open | busy."""
        decision, state, wait_ms, failures = await self._acquire(
            keys=[key], args=[token, reset_ms, probe_ms, HASH_TTL_SECONDS]
        )
        return _text(decision), _text(state), int(wait_ms), int(failures)

    async def record(self, key: str, token: str, outcome: str, fail_max: int, reset_ms: int) -> str:
        """Apply ``outcome`` (success | failure); returns the state after it."""
        _before, after, _failures = await self._record(
            keys=[key], args=[token, outcome, fail_max, reset_ms, HASH_TTL_SECONDS]
        )
        return _text(after)

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])

    async def read(self, key: str) -> tuple[dict[str, str], int]:
        """The breaker's hash and the server's time (ms), one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.time()
            fields, (seconds, micros) = await pipe.execute()
        data = {_text(k): _text(v) for k, v in fields.items()}
        return data, int(seconds) * 1000 + int(micros) // 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
