"""Backpressure: with maxmemory + noeviction, XADD and SADD fail with OOM while XACK would
still work. A commit must then ack nothing, so the input stays pending (REDIS-NOTES), and the
retried commit succeeds once memory is back."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from agent_runtime.embedded import EmbeddedServer
from agent_runtime.transport.streams import Commit, StreamBus

pytestmark = pytest.mark.anyio


async def test_oom_commit_acks_nothing(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path, persistent=False, extra_args=("--maxmemory", "4mb")) as server:
        client = Redis.from_url(server.url)
        bus = StreamBus(client, group="a", consumer="a-0")
        await bus.ensure_group("in")
        await client.xadd("in", {b"m": b"input"})
        [entry] = await bus.read_new(["in"], count=1, block_ms=1)
        with pytest.raises(redis.exceptions.ResponseError):  # fill memory up to the limit
            for i in range(10_000):
                await client.set(f"filler:{i}", b"x" * 4096)

        commit = Commit(outputs=[("out", {b"m": b"output"}, None)], done_ids=["id"])
        commit.ack(entry)
        with pytest.raises(redis.exceptions.RedisError, match=r"maxmemory|EXECABORT"):
            await bus.commit(commit)

        # Nothing is acknowledged while any write or mark is refused: the input stays pending
        # (an output may already be written; its copy on retry has the same message id).
        assert (await client.xpending("in", "a"))["pending"] == 1
        assert await bus.already_done(["id"]) == [False]

        await client.delete(*[f"filler:{i}" for i in range(10_000)])  # memory back
        await bus.commit(commit)  # the worker retries the same batch
        assert (await client.xpending("in", "a"))["pending"] == 0
        assert await bus.already_done(["id"]) == [True]
        assert await client.xlen("out") >= 1
        await client.aclose()
