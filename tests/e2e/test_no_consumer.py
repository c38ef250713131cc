"""A request nobody can finish still ends with an answer, written by the fleet's deadline
sweep: real worker processes on the session's embedded server, a two-agent pipeline
(echo -> sink) with signed envelopes. The requester waits far longer than the request's
deadline and must get ``request.failed`` saying why, not a timeout of its own."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_runtime.client import Client
from protocols.core import RequestFailed
from tests.fixtures.pipeline import LivePipeline, MakePipeline, echo_sink

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.timeout(90)]
DEADLINE = 2.0  # the request's
PATIENCE = 30.0  # the requester's: the answer must come long before this


FLEET = {"block_ms": 200, "heartbeat_interval": 0.5, "drain_timeout": 1}


@pytest.fixture
def fleet(make_pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch) -> LivePipeline:
    key = "e2e-sweep-signing-key"  # the sweep's reply must be signed like any envelope
    monkeypatch.setenv("AGENT_RUNTIME_SIGNING_KEY", key)
    fleet = make_pipeline(echo_sink(), worker=FLEET, requests={"sweep_interval": 0.2})
    fleet.env["AGENT_RUNTIME_SIGNING_KEY"] = key
    return fleet


@pytest.fixture
async def client(fleet: LivePipeline) -> AsyncIterator[Client]:
    async with Client.connect(fleet.url, fleet.pipeline) as client:
        yield client


async def ask(client: Client, text: str) -> Any:
    message = await client.publish(text, timeout=DEADLINE)
    reply = await client.wait_reply(message, PATIENCE)  # returns with the first reply
    assert reply.message.correlation_id == message.correlation_id
    return reply.payload


async def test_a_request_whose_next_agent_type_has_no_worker_is_answered(
    fleet: LivePipeline, client: Client
) -> None:
    fleet.start("echo")  # echo hands it on to sink, whose worker is simply not started
    failed = await ask(client, "nobody finishes me")
    assert isinstance(failed, RequestFailed)
    assert failed.code in ("no_consumer", "expired")
    assert (failed.status, failed.code, failed.agent) == ("timeout", "no_consumer", "sink")
    assert failed.stage == "test.echoed"


async def test_a_request_whose_entry_agent_has_no_worker_is_answered(
    fleet: LivePipeline, client: Client
) -> None:
    fleet.start("sink")  # a live worker of another type sweeps for the whole fleet
    failed = await ask(client, "nobody reads me")
    assert isinstance(failed, RequestFailed)
    assert (failed.status, failed.code, failed.agent) == ("timeout", "no_consumer", "echo")


async def test_a_request_stuck_at_a_wedged_worker_past_its_deadline_is_answered(
    fleet: LivePipeline, client: Client
) -> None:
    fleet.configure(
        echo_sink(echo_worker={"heartbeat_interval": 30})
    )  # echo's heartbeat outlives the test
    fleet.start("sink")
    fleet.start("echo").signal(signal.SIGSTOP)  # alive, heartbeat fresh, reads nothing
    failed = await ask(client, "wait here")
    assert isinstance(failed, RequestFailed)
    assert (failed.status, failed.code, failed.agent) == ("timeout", "expired", "echo")
    assert failed.stage == "user.request"
