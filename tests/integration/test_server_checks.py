"""The worker refuses a server that would evict its keys (REDIS-NOTES: an evicting
maxmemory-policy silently deletes streams and de-duplication sets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from agent_runtime.errors import TransportError
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.transport.streams import StreamBus

pytestmark = pytest.mark.anyio


async def test_evicting_server_is_refused(tmp_path: Path) -> None:
    with EmbeddedServer(
        tmp_path, persistent=False, extra_args=("--maxmemory-policy", "allkeys-lru")
    ) as server:
        client = Redis.from_url(server.url)
        try:
            with pytest.raises(TransportError, match=r"allkeys-lru.*noeviction"):
                await StreamBus(client, group="a", consumer="a-0").check_server()
        finally:
            await client.aclose()


async def test_noeviction_server_is_accepted(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await StreamBus(client, group="a", consumer="a-0").check_server()
    finally:
        await client.aclose()
