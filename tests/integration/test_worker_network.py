"""A worker survives its connection to Redis: it waits for a server that is not up yet, and
a connection error in the reclaim path (which used to crash the worker) loses and doubles
nothing. The pool hands out connections first come, first served. Real embedded server,
worker in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agent_runtime.client import Client
from agent_runtime.codec import Codec
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.connect import connect
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.build import build_worker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def make_pipeline(prefix: str, **worker: Any) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": {"block_ms": 100, "heartbeat_interval": 0.5, "drain_timeout": 1, **worker},
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo"},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def poll(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    with anyio.move_on_after(timeout):
        while not await condition():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


async def echoed(redis: Any, pipeline: Pipeline) -> list[str]:
    """Texts the echo worker sent on to the sink (one entry per output)."""
    codec = Codec(pipeline.schemas, keys=pipeline.config.keys)
    inbox = pipeline.config.keys.inbox("sink")
    entries = await redis.xrange(inbox)
    return [codec.decode(fields, inbox).message.payload["text"] for _, fields in entries]


async def test_a_worker_started_before_its_server_waits_for_it(tmp_path: Path, prefix: str) -> None:
    pipeline = make_pipeline(prefix)
    server = EmbeddedServer(tmp_path / "later", persistent=False)
    redis = connect(server.url).redis
    worker = build_worker(pipeline, "echo", redis, consumer="echo-early-0").worker
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)

            async def retried() -> bool:
                return bool(redis.connection_pool.gate.attempts >= 2)

            await poll(retried, "the worker retrying the connection")
            await anyio.to_thread.run_sync(server.start)
            publisher = connect(server.url).redis  # another process, in real life
            await Client(publisher, pipeline).publish("hello")

            async def handled() -> bool:
                return await echoed(publisher, pipeline) == ["hello"]

            await poll(handled, "the request handled once the server is up")
            worker.stop()
            await publisher.aclose()
    finally:
        await redis.aclose()
        server.stop()


async def test_connection_errors_while_reclaiming_lose_and_double_nothing(
    redis: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = make_pipeline(prefix, reclaim_idle=0.4, reclaim_interval=0.1)
    keys = pipeline.config.keys
    inbox, group = keys.inbox("echo"), keys.group("echo")
    client = Client(redis, pipeline)
    worker = build_worker(pipeline, "echo", redis, consumer="echo-live-0").worker
    await worker.bus.ensure_group(inbox)
    for i in range(5):
        await client.publish(f"request {i}")
    # A consumer that read them and died: its entries are reclaimed by the live worker.
    await redis.xreadgroup(group, "echo-dead-0", {inbox: ">"}, count=10)

    failures = {"reclaim": 2, "already_done": 3}
    real_reclaim, real_done = worker.bus.reclaim, worker.bus.already_done

    async def reclaim(*args: Any, **kwargs: Any) -> Any:
        if failures["reclaim"]:
            failures["reclaim"] -= 1
            raise RedisConnectionError("Connection closed by server.")
        return await real_reclaim(*args, **kwargs)

    async def already_done(ids: list[str]) -> list[bool]:
        if failures["already_done"]:  # the reclaimed batch's dispatch loses its connection
            failures["already_done"] -= 1
            raise RedisConnectionError("Connection closed by server.")
        return await real_done(ids)

    monkeypatch.setattr(worker.bus, "reclaim", reclaim)
    monkeypatch.setattr(worker.bus, "already_done", already_done)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)

        async def all_handled() -> bool:
            pending = await redis.xpending(inbox, group)
            return len(await echoed(redis, pipeline)) >= 5 and pending["pending"] == 0

        await poll(all_handled, "every reclaimed request handled and acknowledged")
        worker.stop()
    assert failures == {"reclaim": 0, "already_done": 0}  # the faults did happen
    assert sorted(await echoed(redis, pipeline)) == [f"request {i}" for i in range(5)]


async def test_the_pool_serves_waiting_callers_first_come_first_served(redis_url: str) -> None:
    redis = connect(redis_url + "?max_connections=1").redis
    pool = redis.connection_pool
    order: list[str] = []
    try:
        held = await pool.get_connection()

        async def take(name: str) -> None:
            connection = await pool.get_connection()
            order.append(name)
            await pool.release(connection)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, "queued first")
            await anyio.wait_all_tasks_blocked()
            await pool.release(held)
            await take("came back at once")  # must not jump the queue
        assert order == ["queued first", "came back at once"]
        assert await redis.ping()  # no slot leaked
    finally:
        await redis.aclose()
