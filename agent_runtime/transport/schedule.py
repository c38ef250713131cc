"""The schedule's Redis commands (agent_runtime/worker/schedule.py keeps the decisions): one
sorted set per agent type, ``P:schedule:AGENT`` (score: due time in server epoch ms, member:
the message to publish, JSON; agent_runtime/schedule.py).

Delivery guarantees, with any number of workers sweeping the same set:

* **claim** (one script): the due members get a lease -- their score moves to ``lease_until``
  -- and are returned; a concurrent sweep no longer sees them due, so two sweepers never fire
  the same member at once;
* **settle** (one script): after the member's message was published, it is removed only if
  its score is still that lease (a member re-added or re-claimed meanwhile stays);
* a sweeper that dies between claim and settle leaves the member in the set: it is due again
  when the lease ends and fires again; the message's id is derived from the member, so the
  copy is dropped by the consumer's de-duplication. An entry is gone only once its message
  is in the inbox.

Each command touches one key (Cluster-safe).
"""

from __future__ import annotations

from typing import Any

from agent_runtime.transport.keys import Keys

#: KEYS: the schedule. ARGV: now ms, lease end ms, limit. Returns the members claimed.
CLAIM_SCRIPT = """#!lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member) end
return due
"""

#: KEYS: the schedule. ARGV: member, lease end ms. 1: removed; 0: not ours any more.
SETTLE_SCRIPT = """#!lua flags=allow-oom
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class RedisSchedule:
    """:class:`~agent_runtime.transport.base.Schedule` on a redis-py client."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._claim = redis.register_script(CLAIM_SCRIPT)  # EVALSHA: every worker, every 0.5 s
        self._settle = redis.register_script(SETTLE_SCRIPT)

    async def add(self, agent: str, member: bytes, due_ms: int) -> None:
        """Enter ``member`` (``NX``: a redelivered handler re-adding it changes nothing, a
        claimed member keeps its lease)."""
        await self._redis.zadd(self._keys.schedule(agent), {member: due_ms}, nx=True)

    async def remove(self, agent: str, member: bytes) -> None:
        await self._redis.zrem(self._keys.schedule(agent), member)

    async def claim(self, agent: str, now_ms: int, lease_until_ms: int, limit: int) -> list[bytes]:
        """Members due at ``now_ms`` (at most ``limit``), leased until ``lease_until_ms``."""
        key = self._keys.schedule(agent)
        claimed: list[bytes] = await self._claim(keys=[key], args=[now_ms, lease_until_ms, limit])
        return list(claimed or [])

    async def settle(self, agent: str, member: bytes, lease_until_ms: int) -> bool:
        """Remove a fired member if it still holds that lease."""
        key = self._keys.schedule(agent)
        return bool(await self._settle(keys=[key], args=[member, lease_until_ms]))

    async def members(self, agent: str, limit: int) -> list[tuple[bytes, float]]:
        """The first ``limit`` members by due time, with their scores (leased ones too)."""
        found: list[tuple[bytes, float]] = await self._redis.zrangebyscore(
            self._keys.schedule(agent), "-inf", "+inf", start=0, num=limit, withscores=True
        )
        return [(m, float(s)) for m, s in found]
