"""The deadline sweep's Redis commands (agent_runtime/worker/sweep.py keeps the decisions):
the fleet's deadline set ``P:deadlines``, the sweep lock, the answer script, and the reads
that find where a request waits (its trace list, the consumers of a group, heartbeats)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from agent_runtime.transport.keys import Keys

#: KEYS: outcome guard, reply stream. ARGV: guard value, TTL, then the reply's field/value
#: pairs. 1: answered; 0: the guard was set (already answered); -1: the reply key holds
#: another type (cannot be answered). ``#!lua``: under OOM the server refuses it as a whole.
ANSWER_SCRIPT = """#!lua
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

#: Delete the lock only if it still holds our token (runs under OOM too: DEL frees memory).
RELEASE_SCRIPT = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Answer:
    """One terminal reply the sweep writes, behind the request's outcome guard."""

    guard: str  # the outcome guard key
    guard_value: str
    stream: str  # the reply stream
    ttl: int
    fields: Mapping[bytes, bytes]


class RedisDeadlines:
    """:class:`~agent_runtime.transport.base.Deadlines` on a redis-py client."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def due(self, now_ms: int, limit: int) -> list[bytes]:
        """Members whose deadline is at or before ``now_ms`` (at most ``limit``)."""
        found: list[bytes] = await self._redis.zrangebyscore(
            self._keys.deadlines(), "-inf", now_ms, start=0, num=limit
        )
        return found

    async def lock(self, token: str, ms: int) -> bool:
        return bool(await self._redis.set(self._keys.sweep_lock(), token, nx=True, px=ms))

    async def unlock(self, token: str) -> None:
        await self._redis.eval(RELEASE_SCRIPT, 1, self._keys.sweep_lock(), token)

    async def settle(self, members: list[bytes]) -> None:
        """Remove handled members from the set."""
        if members:
            await self._redis.zrem(self._keys.deadlines(), *members)

    async def answer(self, answers: list[Answer]) -> list[Any]:
        """One answer script per reply, pipelined; results in order (1, 0, -1, or the
        error of that script)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for a in answers:
                args = [item for pair in a.fields.items() for item in pair]
                pipe.eval(ANSWER_SCRIPT, 2, a.guard, a.stream, a.guard_value, a.ttl, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def traces(self, cids: list[str], window: int) -> list[Any]:
        """The last ``window`` trace records of each request (an exception where a read
        failed), one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.lrange(self._keys.trace(cid), -window, -1)
            traces: list[Any] = await pipe.execute(raise_on_error=False)
        return traces

    async def heartbeats(self, keys: list[str]) -> list[Any]:
        """Each heartbeat record (None: absent; an exception where the read failed)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            beats: list[Any] = await pipe.execute(raise_on_error=False)
        return beats

    async def consumers(self, stream: str, group: str) -> list[tuple[int, str]]:
        """``(idle ms, name)`` of the group's consumers (empty: no stream or group yet)."""
        try:
            found = await self._redis.xinfo_consumers(stream, group)
        except redis_errors.ResponseError:  # no stream or no group yet: nobody consumed
            return []
        rows = []
        for row in found:
            name = row.get("name")
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            rows.append((int(row.get("idle") or 0), text))
        return rows
