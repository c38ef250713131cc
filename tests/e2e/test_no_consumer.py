"""A request nobody can finish still ends with an answer, written by the fleet's deadline
sweep: real worker processes on the session's embedded server, a two-agent pipeline
(echo -> sink) with signed envelopes. The requester waits far longer than the request's
deadline and must get ``request.failed`` saying why, not a timeout of its own."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess
from protocols.core import RequestFailed

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.timeout(90)]
DEADLINE = 2.0  # the request's
PATIENCE = 30.0  # the requester's: the answer must come long before this


class Fleet:
    """The pipeline file and the worker processes started for one test."""

    def __init__(self, tmp: Path, url: str, prefix: str, env: dict[str, str]) -> None:
        self.tmp, self.url, self.env, self.prefix = tmp, url, env, prefix
        self.workers: list[WorkerProcess] = []
        self.configure({})

    def configure(self, echo_worker: dict[str, Any]) -> None:
        config = {
            "key_prefix": self.prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": {"block_ms": 200, "heartbeat_interval": 0.5, "drain_timeout": 1},
            "requests": {"sweep_interval": 0.2},
            "agents": {
                "echo": {
                    "class": "tests.fixtures.agents:Echo",
                    "worker": echo_worker,
                },
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
        self.path = self.tmp / "pipeline.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.pipeline = Pipeline.load(self.path)

    def start(self, agent: str) -> WorkerProcess:
        proc = WorkerProcess(
            agent,
            config=self.path,
            redis_url=self.url,
            env=self.env,
            log_path=self.tmp / f"{agent}.log",
        ).start()
        self.workers.append(proc)
        with redis.Redis.from_url(self.url) as r:
            return proc.wait_ready(r, self.pipeline.config.keys)

    def stop(self) -> None:
        for proc in self.workers:
            proc.signal(signal.SIGCONT)
            proc.stop(15)


@pytest.fixture
def fleet(
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    subprocess_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Fleet]:
    key = "e2e-sweep-signing-key"  # the sweep's reply must be signed like any envelope
    monkeypatch.setenv("AGENT_RUNTIME_SIGNING_KEY", key)
    fleet = Fleet(tmp_path, redis_url, prefix, {**subprocess_env, "AGENT_RUNTIME_SIGNING_KEY": key})
    yield fleet
    fleet.stop()


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[Client]:
    async with Client.connect(fleet.url, fleet.pipeline) as client:
        yield client


async def ask(client: Client, text: str) -> Any:
    message = await client.publish(text, timeout=DEADLINE)
    reply = await client.wait_reply(message, PATIENCE)  # returns with the first reply
    assert reply.message.correlation_id == message.correlation_id
    return reply.payload


async def test_a_request_whose_next_agent_type_has_no_worker_is_answered(
    fleet: Fleet, client: Client
) -> None:
    fleet.start("echo")  # echo hands it on to sink, whose worker is simply not started
    failed = await ask(client, "nobody finishes me")
    assert isinstance(failed, RequestFailed)
    assert failed.code in ("no_consumer", "expired")
    assert (failed.status, failed.code, failed.agent) == ("timeout", "no_consumer", "sink")
    assert failed.stage == "test.echoed"


async def test_a_request_whose_entry_agent_has_no_worker_is_answered(
    fleet: Fleet, client: Client
) -> None:
    fleet.start("sink")  # a live worker of another type sweeps for the whole fleet
    failed = await ask(client, "nobody reads me")
    assert isinstance(failed, RequestFailed)
    assert (failed.status, failed.code, failed.agent) == ("timeout", "no_consumer", "echo")


async def test_a_request_stuck_at_a_wedged_worker_past_its_deadline_is_answered(
    fleet: Fleet, client: Client
) -> None:
    fleet.configure({"heartbeat_interval": 30})  # echo's heartbeat outlives the test
    fleet.start("sink")
    fleet.start("echo").signal(signal.SIGSTOP)  # alive, heartbeat fresh, reads nothing
    failed = await ask(client, "wait here")
    assert isinstance(failed, RequestFailed)
    assert (failed.status, failed.code, failed.agent) == ("timeout", "expired", "echo")
    assert failed.stage == "user.request"
