"""What one gateway process holds: the pipeline, one Redis client (a bounded pool), the
:class:`~agent_runtime.client.Client` that publishes and signs, its one shared
:class:`~agent_runtime.transport.replies.ReplyReader`, the shared trace follower and fleet
feed, and the operator tools' readers. Nothing per HTTP request: N processes behind a load
balancer share only Redis."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.gateway.fleet import Throughput
from agent_runtime.gateway.follow import FleetFeed, TraceFollower
from agent_runtime.gateway.settings import GatewaySettings
from agent_runtime.observability.gateway_metrics import GatewayMetrics
from agent_runtime.transport.connect import connect
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.gateway import GatewayStore
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.traces import TraceLog

#: Connections of the gateway's pool (publishes, reads, rate limits; the reply reader's lanes
#: and the fleet feed's blocking read are on top).
POOL_SIZE = 32
#: Seconds /readyz waits for PING.
READY_TIMEOUT = 1.0


@dataclass
class GatewayRuntime:
    pipeline: Pipeline
    settings: GatewaySettings
    url: str
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    def __post_init__(self) -> None:
        connection = connect(self.url, max_connections=POOL_SIZE)
        self.keys: Keys = self.pipeline.config.keys
        self.client = Client(connection.redis, self.pipeline)  # signs like any client
        self.store = GatewayStore.of(connection, self.keys)
        self.reader = RuntimeReader.of(connection)
        self.traces = TraceLog.of(connection, self.keys)
        self.dead_letters = DeadLetterStore.of(connection, self.keys)
        self.follower = TraceFollower(self.store, self.settings.trace_poll_seconds)
        self.feed = FleetFeed(self)
        self.throughput = Throughput()
        self.entry_agent = self.pipeline.routing.table.get("user.request")

    async def ready(self) -> bool:
        """Whether Redis answers PING within :data:`READY_TIMEOUT` seconds."""
        with anyio.move_on_after(READY_TIMEOUT):
            try:
                await self.store.ping()
            except Exception:
                return False
            return True
        return False

    async def aclose(self) -> None:
        await self.feed.aclose()
        await self.follower.aclose()
        await self.client.aclose()
