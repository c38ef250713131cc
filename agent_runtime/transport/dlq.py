"""Redis commands on the dead-letter streams (``P:dlq:AGENT``) for the operator tools: find
them, read their newest entries, re-publish an original entry to its inbox, delete entries.

What an entry holds, and which entries may be replayed, is decided by
``agent_runtime/observability/deadletters.py``; this module only runs the commands.
"""

from __future__ import annotations

from agent_runtime.transport.connect import Connection
from agent_runtime.transport.inspect import RedisClient, RuntimeReader, raw, text
from agent_runtime.transport.keys import Keys

#: Entries read from one dead-letter stream at most (a huge stream cannot stall a command).
DLQ_SCAN_LIMIT = 10_000
#: Entry ids per XDEL.
DELETE_BATCH = 500


class DeadLetterStore:
    """The dead-letter streams under one key prefix."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._reader = RuntimeReader(redis)

    @classmethod
    def of(cls, connection: Connection, keys: Keys) -> DeadLetterStore:
        return cls(connection.redis, keys)

    async def streams(self) -> list[str]:
        """Every dead-letter stream that exists, sorted (SCAN, never KEYS)."""
        return await self._reader.scan(self.keys.dlq_pattern(), "stream")

    async def entries(
        self, dlq: str, limit: int = DLQ_SCAN_LIMIT
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """The newest ``limit`` entries of ``dlq``, oldest first."""
        rows = await self.redis.xrevrange(dlq, count=limit) or []
        return [
            (text(entry_id), {raw(k): raw(v) for k, v in (fields or {}).items()})
            for entry_id, fields in reversed(rows)
        ]

    async def length(self, dlq: str) -> int:
        return int(await self.redis.xlen(dlq))

    async def republish(
        self,
        dlq: str,
        letter_id: str,
        inbox: str,
        fields: dict[bytes, bytes],
        *,
        reopen: str | None = None,
    ) -> str:
        """XADD ``fields`` to ``inbox`` as a new entry and XDEL the letter, in one round trip;
        with ``reopen`` (a correlation id) the request's outcome guard is deleted first, so
        the replayed message may end the request again. Returns the new entry id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if reopen:
                pipe.delete(self.keys.outcome(reopen))
            pipe.xadd(inbox, fields)  # type: ignore[arg-type]  # bytes fields are valid
            pipe.xdel(dlq, letter_id)
            *_reopened, new_id, _deleted = await pipe.execute()
        return text(new_id)

    async def delete(self, dlq: str, ids: list[str]) -> int:
        """XDEL ``ids`` from ``dlq`` in batches; how many were deleted."""
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            deleted += int(await self.redis.xdel(dlq, *ids[start : start + DELETE_BATCH]))
        return deleted
