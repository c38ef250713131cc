"""Redis commands on the per-request trace lists (``P:tracelog:{CID}``, one JSON record per
handled message, written by the client's publish and by every worker's commit): the reads
of ``agent-runtime trace`` and of ``run``'s live progress."""

from __future__ import annotations

from agent_runtime.transport.connect import Connection
from agent_runtime.transport.inspect import RedisClient, raw
from agent_runtime.transport.keys import Keys


class TraceLog:
    """The trace lists under one key prefix."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    @classmethod
    def of(cls, connection: Connection, keys: Keys) -> TraceLog:
        return cls(connection.redis, keys)

    async def records(self, correlation_id: str, start: int = 0) -> list[bytes]:
        """The request's records from index ``start`` on, in the order they were written
        (LRANGE; a list cannot be waited on without taking its elements, so callers poll)."""
        records = await self.redis.lrange(self.keys.trace(correlation_id), start, -1)
        return [raw(record) for record in records]
