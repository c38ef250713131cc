"""Where a message goes: message type -> agent type -> inbox stream (shard by correlation)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_runtime.errors import RoutingError
from agent_runtime.transport.keys import Keys


@dataclass(frozen=True)
class Routing:
    """The routing table of one pipeline. ``table`` maps a message type to the agent type that
    consumes it; ``shards`` gives the inbox shard count of each agent type (default 1)."""

    keys: Keys
    table: Mapping[str, str]
    shards: Mapping[str, int] = field(default_factory=dict)

    def agent_for(self, message_type: str) -> str:
        try:
            return self.table[message_type]
        except KeyError:
            raise RoutingError(
                f"no agent consumes {message_type!r} and no route names one; "
                "add it to an agent's 'consumes' or 'routes' in the pipeline config"
            ) from None

    def stream_for(self, agent: str, correlation_id: uuid.UUID) -> str:
        """The inbox shard of ``agent`` for this request: one request keeps to one shard, so
        its messages stay in order per agent type."""
        shards = self.shards.get(agent, 1)
        return self.keys.inbox(agent, correlation_id.int % shards if shards > 1 else 0)

    def inboxes(self, agent: str) -> list[str]:
        return self.keys.inboxes(agent, self.shards.get(agent, 1))
