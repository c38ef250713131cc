"""The Redis transport: owns one client (:class:`~agent_runtime.transport.connect.Connection`)
and hands out the typed pieces the runtime uses, so no module outside ``transport/`` holds a
raw client for its commands."""

from __future__ import annotations

from typing import Any

from agent_runtime.transport.clock import RedisTime
from agent_runtime.transport.connect import Connection, connect
from agent_runtime.transport.heartbeats import RedisHeartbeats
from agent_runtime.transport.llm_store import RedisLLMStore
from agent_runtime.transport.state import RedisState
from agent_runtime.transport.streams import StreamBus


class RedisTransport:
    """:class:`~agent_runtime.transport.base.Transport` on Redis (single server or Cluster)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.state = RedisState(connection.redis)
        self.clock = RedisTime(connection.redis)
        self.heartbeats = RedisHeartbeats(connection.redis)
        self.llm_store = RedisLLMStore(connection.redis)

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> RedisTransport:
        return cls(connect(url, **kwargs))

    @classmethod
    def of(cls, redis: Any, *, cluster: bool = False, url: str = "") -> RedisTransport:
        """A transport on an existing client (embedders and tests that made their own)."""
        return cls(Connection(redis, cluster, url))

    def bus(self, *, group: str, consumer: str, **options: Any) -> StreamBus:
        """The stream operations of one consumer group (see :class:`StreamBus`)."""
        return StreamBus(
            self.connection.redis, group=group, consumer=consumer, cluster=self.cluster, **options
        )

    @property
    def cluster(self) -> bool:
        return self.connection.cluster

    async def aclose(self) -> None:
        await self.connection.redis.aclose()
