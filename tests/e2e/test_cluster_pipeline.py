"""The echo pipeline (echo -> sink) with sharded inboxes (3 shards per agent type) and two
worker processes of each agent type, against a single server and against a local 3-master
Redis Cluster: every request is answered exactly once, nothing is left pending. Plus one
request through the six built-in agent types on the cluster."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess
from agent_runtime.transport import connect
from agent_runtime.worker.loop import default_consumer_name
from tests.fixtures.approvals import key_pair
from tests.fixtures.pipeline import LivePipeline, MakePipeline, echo_sink, six_agents, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SHARDS = 3
REPLICAS = 2
REQUESTS = 30
FAST = {
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "reclaim_idle": 5.0,
    "reclaim_interval": 0.5,
    "retry_backoff": 0.05,
    "drain_timeout": 5,
}


@pytest.fixture(params=["single", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    fixture = "redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def fleet(make_pipeline: MakePipeline, backend_url: str) -> LivePipeline:
    agents = echo_sink(shards=SHARDS, replicas=REPLICAS)
    return make_pipeline(agents, worker=FAST, url=backend_url)


@pytest.fixture
def config_path(fleet: LivePipeline) -> Path:
    return fleet.config_path


@pytest.fixture
def workers(fleet: LivePipeline) -> list[WorkerProcess]:
    """Every worker process started at once; the test waits for their heartbeats itself."""
    return [fleet.start(a, str(n), wait=False) for a in ("echo", "sink") for n in range(REPLICAS)]


async def _poll(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    with anyio.move_on_after(timeout):
        while not await condition():
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _settled(redis: Any, pipeline: Pipeline) -> bool:
    """Every inbox shard of every agent type fully delivered and acknowledged."""
    for agent in pipeline.agents:
        for stream in pipeline.routing.inboxes(agent):
            for group in await redis.xinfo_groups(stream):
                if group["pending"] or group.get("lag"):
                    return False
    return True


async def test_every_request_answered_exactly_once(
    config_path: Path, backend_url: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    pipeline = Pipeline.load(config_path)
    keys = pipeline.config.keys
    connection = connect(backend_url)
    redis = connection.redis
    try:
        beats = [keys.heartbeat(w.agent, default_consumer_name(w.agent, w.slot)) for w in workers]

        async def all_ready() -> bool:
            dead = [
                p.read_text()
                for w in workers
                if not w.alive()
                for p in tmp_path.glob(f"{w.agent}-{w.slot}.log")
            ]
            assert not dead, dead
            return all([await redis.exists(b) for b in beats])

        await _poll(all_ready, 60, "every worker's heartbeat")
        client = Client(redis, pipeline)
        sent = [await client.publish(f"hello {i}") for i in range(REQUESTS)]
        shards_used = {pipeline.routing.stream_for("echo", m.correlation_id) for m in sent}
        assert shards_used == set(pipeline.routing.inboxes("echo"))
        for message in sent:
            reply = await client.wait_reply(message, timeout=30)
            text = message.payload["text"]
            assert reply.payload.model_dump() == {"text": text.upper()}
        await _poll(lambda: _settled(redis, pipeline), 30, "all inboxes acknowledged")
        for message in sent:
            assert message.reply_to is not None
            assert await redis.xlen(message.reply_to) == 1, "answered more than once"
        for agent in pipeline.agents:
            assert await redis.xlen(keys.dlq(agent)) == 0
        assert all(w.alive() for w in workers), "a worker crashed"
    finally:
        await redis.aclose()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", ["single", "cluster"])
def test_six_agent_pipeline_two_replicas_each(
    target: str, request: pytest.FixtureRequest, tmp_path: Path, make_pipeline: MakePipeline
) -> None:
    """The default pipeline's six agent types, two worker processes of each, on a single
    server and on the 3-master cluster: a request with parallel steps and a dependent step
    succeeds (the router's WATCH/MULTI on the request's hash-tagged state works under
    Cluster, and replicas of every type share the work)."""
    url = request.getfixturevalue("redis_url" if target == "single" else "redis_cluster_url")
    from protocols.pipeline import Report

    agents = six_agents(tmp_path, "127.0.0.1")
    pipe = make_pipeline(
        agents,
        worker={"drain_timeout": 2, "heartbeat_interval": 0.5, "reclaim_interval": 1},
        url=url,
    )
    pipeline = pipe.pipeline
    env = key_pair()
    replicas = dict.fromkeys(pipeline.agents, 2)

    async def ask() -> Report:
        async with Client.connect(url, pipeline) as client:
            message = await client.publish(
                "run date and run whoami and read data/notes.txt then run uname -a", timeout=60
            )
            reply = await client.wait_reply(message, 60)
            assert isinstance(reply.payload, Report)
            return reply.payload

    with supervised(pipe, ready_timeout=90, env=env, replicas=replicas) as (portal, supervisor):
        assert len(supervisor.processes()) == 2 * len(pipeline.agents)
        report = portal.call(ask)
    assert report.status == "succeeded", report.reasons
    by_id = {s.id: s for s in report.steps}
    assert by_id["s4"].depends_on == ["s1", "s2", "s3"]
    assert by_id["s2"].output["stdout"].strip()
