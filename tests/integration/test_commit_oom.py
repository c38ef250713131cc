"""Backpressure: with maxmemory + noeviction, XADD and SADD fail with OOM while XACK would
still work. A commit must then ack nothing, so the input stays pending (REDIS-NOTES), and the
retried commit succeeds once memory is back."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.transport.streams import Commit, Handled, StreamBus, Write

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("atomic", [True, False])
async def test_oom_commit_acks_nothing(tmp_path: Path, atomic: bool) -> None:
    with EmbeddedServer(tmp_path, persistent=False, extra_args=("--maxmemory", "4mb")) as server:
        client = Redis.from_url(server.url)
        bus = StreamBus(client, group="a", consumer="a-0", atomic=atomic)
        await bus.ensure_group("in")
        await client.xadd("in", {b"m": b"input"})
        [entry] = await bus.read_new(["in"], count=1, block_ms=1)
        with pytest.raises(redis.exceptions.ResponseError):  # fill memory up to the limit
            for i in range(10_000):
                await client.set(f"filler:{i}", b"x" * 4096)

        commit = Commit([Handled(entry, "id", [Write("out", {b"m": b"output"})])])
        with pytest.raises(redis.exceptions.RedisError, match=r"maxmemory|EXECABORT"):
            await bus.commit(commit)

        # Nothing is acknowledged while any write or mark is refused: the input stays pending
        # (the commit script is refused as a whole: nothing is half-written).
        assert (await client.xpending("in", "a"))["pending"] == 1
        assert await bus.already_done(["id"]) == [False]

        await client.delete(*[f"filler:{i}" for i in range(10_000)])  # memory back
        await bus.commit(commit)  # the worker retries the same batch
        assert (await client.xpending("in", "a"))["pending"] == 0
        assert await bus.already_done(["id"]) == [True]
        # the script is all or nothing; the portable path may have written the output before
        # the refused mark, and writes its copy (same message id) again on the retry
        assert await client.xlen("out") == 1 if atomic else await client.xlen("out") >= 1
        await client.aclose()
