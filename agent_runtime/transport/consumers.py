"""Consumer hygiene: removing a group's consumers that are gone.

Every worker process is one consumer of its agent type's group, named after its host; a
consumer stays in the group after its process is gone (XREADGROUP creates consumers, nothing
removes them), so autoscaling churn and recreated containers grow ``XINFO CONSUMERS`` forever.
:data:`REMOVE_IDLE_SCRIPT` removes the consumers idle past a threshold that own no pending
entries -- never one with pending entries: ``XGROUP DELCONSUMER`` drops a consumer's pending
entries from the group (they would never be delivered again).

The check and the removal are one Lua script, atomic on the server: between a client's
``XINFO CONSUMERS`` and its ``DELCONSUMER`` a reclaim (XAUTOCLAIM) or a read could give the
consumer pending entries, which the removal would then destroy. One key (the stream), so the
script runs on Redis Cluster too.

``idle`` (XINFO CONSUMERS) is the time since the consumer's last read or claim: a live worker
reads at least every ``block_ms``, so a threshold far above it only meets dead consumers; a
live one removed by mistake (a paused fleet) is recreated by its next read, and owns nothing.
"""

from __future__ import annotations

from typing import Any

#: KEYS[1] stream; ARGV[1] group, ARGV[2] minimum idle (ms), ARGV[3] a consumer to keep (the
#: caller). Returns the names removed. A missing stream or group removes nothing.
REMOVE_IDLE_SCRIPT = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then
  return {}
end
local min_idle = tonumber(ARGV[2])
local removed = {}
for _, fields in ipairs(consumers) do
  local info = {}
  for i = 1, #fields, 2 do
    info[fields[i]] = fields[i + 1]
  end
  if info['name'] ~= ARGV[3] and info['pending'] == 0 and info['idle'] >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""


async def remove_idle_consumers(
    script: Any, stream: str, group: str, min_idle_ms: int, keep: str
) -> list[str]:
    """Run :data:`REMOVE_IDLE_SCRIPT` (``script``: its registered form) on ``stream``."""
    names = await script(keys=[stream], args=[group, int(min_idle_ms), keep])
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names or []]
