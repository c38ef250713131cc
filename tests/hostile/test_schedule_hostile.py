"""Hostile bytes where approvals and cancel read them (Redis values any client with write
access can set): a schedule member, a cancellation mark, a pending-approval record. Each parser
returns a value or None for anything, never raises; the schedule sweep drops a bad member (and
removes it: never retried), keeps sweeping, and still fires the good ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.approval import _record
from agent_runtime.cancel import Cancellation
from agent_runtime.schedule import Scheduled
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.worker.schedule import ScheduleSweep
from protocols.core import UserRequest
from protocols.envelope import AgentMessage
from tests.fixtures.agents import echo_sink_pipeline

pytestmark = pytest.mark.anyio

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "correlation_id": st.uuids().map(str) | JSONISH,
        "to_agent": st.just("echo") | JSONISH,
        "message_type": st.just("user.request") | JSONISH,
        "schema_version": st.integers() | JSONISH,
        "payload": st.dictionaries(st.text(max_size=8), JSONISH) | JSONISH,
        "by": st.text(max_size=10) | JSONISH,
        "step": st.dictionaries(st.text(max_size=8), JSONISH) | JSONISH,
        "expires_at": st.floats() | JSONISH,
        "hops": st.integers() | JSONISH,
        "deadline": st.text(max_size=30) | JSONISH,
    },
)
HOSTILE = (
    st.binary(max_size=2_000)
    | JSONISH.map(lambda v: repr(v).encode())
    | SHAPED.map(lambda v: __import__("json").dumps(v).encode())
    | st.just(b"[" * 100_000)
    | st.just(b"{" + b'"a":' * 50_000 + b"1" + b"}" * 50_000)
    | st.just(b"x" * 300_000)
)


@settings(max_examples=300, deadline=None)
@given(raw=HOSTILE)
def test_parsers_return_a_value_or_none_for_any_bytes(raw: bytes) -> None:
    spec = Scheduled.parse(raw)
    assert spec is None or isinstance(spec, Scheduled)
    mark = Cancellation.parse(raw)
    assert mark is None or isinstance(mark.by, str)
    record = _record(raw)
    assert record is None or isinstance(record["expires_at"], float)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(HOSTILE, min_size=1, max_size=5, unique=True))
async def test_the_sweep_drops_bad_members_and_fires_the_good_one(
    bad: list[bytes], prefix: str
) -> None:
    pipeline = echo_sink_pipeline(prefix)
    transport = MemoryTransport(keys=pipeline.config.keys)
    cid = uuid.uuid4()
    request = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=cid,
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload={"text": "x"},
        timestamp=datetime.now(UTC),
    )
    good = Scheduled.answering(request, "echo", UserRequest(text="later")).member()
    for member in [*bad, good]:
        await transport.schedule.add("echo", member, 0)
    sweep = ScheduleSweep(transport, pipeline, pipeline.codec("echo"), "echo")
    await sweep.sweep_once()
    fired = await transport.redis.xrange(pipeline.config.keys.inbox("echo"))
    assert (
        len(fired)
        == sweep.fired
        == 1
        + sum(
            1
            for b in bad
            if (s := Scheduled.parse(b)) is not None and s.to_agent == "echo" and _valid(s, b)
        )
    )
    assert await transport.schedule.members("echo", 100) == []  # nothing left to retry


def _valid(spec: Scheduled, member: bytes) -> bool:
    try:
        spec.message(datetime.now(UTC), member)
    except ValueError:
        return False
    return True
