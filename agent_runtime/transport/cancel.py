"""Cancelling a request (agent_runtime/cancel.py keeps the decisions): one script on the
request's slot records the cancellation and answers the requester, atomically.

Every key is the request's own (hash tag ``{CID}``): the outcome guard, the reply stream, the
cancellation mark ``P:req:{CID}:cancel``, the trace list and the pending-approval hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_runtime.transport.keys import Keys

#: KEYS: outcome guard, reply stream, cancel mark, trace list, approval hash.
#: ARGV: guard value, TTL, cancellation record, trace record, known (1/0), then the reply's
#: field/value pairs. Returns {status, detail}: {1, previous mark} cancelled; {0, guard value}
#: already finished; {-1, ''} the reply key holds another type; {-2, ''} unknown request.
CANCEL_SCRIPT = """#!lua
local finished = redis.call('GET', KEYS[1])
if finished then return {0, finished} end
local known = ARGV[5] == '1' or redis.call('EXISTS', KEYS[3]) == 1
  or redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[5]) == 1
if not known then return {-2, ''} end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then return {-1, ''} end
local previous = redis.call('GET', KEYS[3]) or ''
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[2])
if redis.call('RPUSH', KEYS[4], ARGV[4]) == 1 then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
redis.call('DEL', KEYS[5])
return {1, previous}
"""


@dataclass(frozen=True, slots=True)
class CancelWrite:
    """What the cancel script writes for one request."""

    correlation_id: str
    guard_value: str
    ttl: int
    record: bytes  # the cancellation mark's value
    trace_record: bytes
    reply: dict[bytes, bytes]  # the encoded request.failed
    approvals: str  # the request's pending-approval hash (deleted: nothing waits any more)


class RedisCancels:
    """Cancels requests on a redis-py client."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def cancel(self, write: CancelWrite) -> tuple[int, bytes]:
        """Run the cancel script: ``(status, detail)`` as CANCEL_SCRIPT documents."""
        cid, keys = write.correlation_id, self._keys
        deadline_member = f"{cid} {keys.reply(cid)}"  # as worker/sweep.py deadline_member
        known = await self._redis.zscore(keys.deadlines(), deadline_member) is not None
        args = [item for pair in write.reply.items() for item in pair]
        status, detail = await self._redis.eval(
            CANCEL_SCRIPT,
            5,
            keys.outcome(cid),
            keys.reply(cid),
            keys.cancel(cid),
            keys.trace(cid),
            write.approvals,
            write.guard_value,
            write.ttl,
            write.record,
            write.trace_record,
            "1" if known else "0",
            *args,
        )
        return int(status), detail if isinstance(detail, bytes) else str(detail or "").encode()
