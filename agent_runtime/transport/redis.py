"""The Redis transport: owns one client (:class:`~agent_runtime.transport.connect.Connection`)
and hands out the typed pieces the runtime uses, so no module outside ``transport/`` holds a
raw client for its commands."""

from __future__ import annotations

from typing import Any

from agent_runtime.transport.breaker_scripts import RedisBreakers
from agent_runtime.transport.clock import RedisTime
from agent_runtime.transport.commit import RedisPublisher
from agent_runtime.transport.connect import Connection, connect
from agent_runtime.transport.deadlines import RedisDeadlines
from agent_runtime.transport.heartbeats import RedisHeartbeats
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.llm_store import RedisLLMStore
from agent_runtime.transport.ratelimit import RedisRateLimits
from agent_runtime.transport.schedule import RedisSchedule
from agent_runtime.transport.state import RedisState
from agent_runtime.transport.streams import StreamBus


class RedisTransport:
    """:class:`~agent_runtime.transport.base.Transport` on Redis (single server or Cluster)."""

    def __init__(self, connection: Connection, keys: Keys | None = None) -> None:
        self.connection = connection
        self.keys = keys or Keys()
        self.state = RedisState(connection.redis)
        self.clock = RedisTime(connection.redis)
        self.heartbeats = RedisHeartbeats(connection.redis)
        self.llm_store = RedisLLMStore(connection.redis)
        self.deadlines = RedisDeadlines(connection.redis, self.keys)
        self.publisher = RedisPublisher(connection.redis, self.keys, cluster=connection.cluster)
        self.breakers = RedisBreakers(connection.redis)
        self.schedule = RedisSchedule(connection.redis, self.keys)
        self.rate_limits = RedisRateLimits(connection.redis)

    @classmethod
    def connect(cls, url: str, keys: Keys | None = None, **kwargs: Any) -> RedisTransport:
        return cls(connect(url, **kwargs), keys)

    @classmethod
    def of(
        cls, redis: Any, *, cluster: bool = False, url: str = "", keys: Keys | None = None
    ) -> RedisTransport:
        """A transport on an existing client (embedders and tests that made their own);
        ``keys``: the pipeline's key names (prefix)."""
        return cls(Connection(redis, cluster, url), keys)

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
