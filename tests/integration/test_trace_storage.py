"""A request's trace on a real server: one Redis LIST of JSON records per request (a list, not
a stream: a new stream preallocates a 4 KB node per request), its TTL set when the list is
created, and a trace record that cannot be written never fails the commit it rides."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio import Redis

from agent_runtime.cli.run import TraceTail
from agent_runtime.client import Client
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.observability.trace import load_trace
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import Commit, Entry, Handled, StreamBus, Write
from agent_runtime.transport.traces import TraceLog
from agent_runtime.worker.delivery import Tracer
from protocols.core import UserRequest
from protocols.envelope import AgentMessage

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _pipeline(prefix: str, trace_ttl: int = 24 * 3600, trace: bool = True) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": {"trace_ttl": trace_ttl, "trace": trace},
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo"},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
    return Pipeline.build(config)


async def _bus(redis: Redis, keys: Keys, inbox: str) -> StreamBus:
    bus = StreamBus(redis, group="echo", consumer="echo-0", done_key=lambda b: keys.done("echo", b))
    await bus.ensure_group(inbox)
    return bus


async def _read_one(redis: Redis, bus: StreamBus, inbox: str) -> Entry:
    await redis.xadd(inbox, {b"m": b"input"})
    [entry] = await bus.read_new([inbox], count=1, block_ms=10)
    return entry


def _record(cid: str, outcome: str = "handled", n: int = 0) -> bytes:
    return json.dumps({"agent": "echo", "correlation_id": cid, "outcome": outcome, "n": n}).encode()


def test_the_trace_key_is_new_and_keeps_the_hash_tag() -> None:
    keys = Keys("p")
    assert keys.trace("abc") == "p:tracelog:{abc}"  # never the stream-typed p:trace:{abc}


async def test_records_go_to_one_list_in_order_ttl_set_at_creation(
    redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    inbox = keys.inbox("echo")
    bus = await _bus(redis, keys, inbox)
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    trace = keys.trace(cid)

    entry = await _read_one(redis, bus, inbox)
    commit = Commit([Handled(entry)], traces=[(trace, _record(cid, n=1))], trace_ttl=300)
    await bus.commit(commit)
    assert await redis.type(trace) == b"list"
    assert 0 < await redis.ttl(trace) <= 300
    assert await redis.lrange(trace, 0, -1) == [_record(cid, n=1)]

    # a second commit for the same request: the same list, records in order, and its TTL is
    # not set again (only the push that creates the list sets it)
    commit = Commit(
        [Handled(await _read_one(redis, bus, inbox))],
        traces=[(trace, _record(cid, n=2)), (keys.trace(other), _record(other)), (trace, b"3")],
        trace_ttl=9000,
    )
    await bus.commit(commit)
    assert await redis.lrange(trace, 0, -1) == [_record(cid, n=1), _record(cid, n=2), b"3"]
    assert 0 < await redis.ttl(trace) <= 300
    assert await redis.lrange(keys.trace(other), 0, -1) == [_record(other)]
    assert 300 < await redis.ttl(keys.trace(other)) <= 9000
    assert (await redis.xpending(inbox, "echo"))["pending"] == 0


@pytest.mark.parametrize("with_outputs", [True, False])
async def test_a_trace_key_of_another_type_loses_the_record_not_the_commit(
    redis: Redis, prefix: str, with_outputs: bool
) -> None:
    keys = Keys(prefix)
    inbox = keys.inbox("echo")
    bus = await _bus(redis, keys, inbox)
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    broken = keys.trace(cid)
    await redis.set(broken, b"not a list")  # RPUSH to it fails with WRONGTYPE
    entry = await _read_one(redis, bus, inbox)
    message_id = str(uuid.uuid4())
    writes = [Write(keys.inbox("sink"), {b"m": b"out"})] if with_outputs else []
    commit = Commit(
        [Handled(entry, message_id, writes)],
        traces=[(broken, _record(cid)), (keys.trace(other), _record(other))],
        trace_ttl=300,
    )
    await bus.commit(commit)  # does not raise

    assert (await redis.xpending(inbox, "echo"))["pending"] == 0
    assert await bus.already_done([message_id]) == [True]
    assert await redis.xlen(keys.inbox("sink")) == (1 if with_outputs else 0)
    assert await redis.get(broken) == b"not a list"
    assert await redis.ttl(broken) == -1  # not expired as if it were a new trace
    assert await redis.lrange(keys.trace(other), 0, -1) == [_record(other)]


async def test_client_opens_the_trace_with_a_json_published_record(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix, trace_ttl=600)
    client = Client(redis, pipeline)
    before = int(time.time() * 1000)
    message = await client.publish("hello")
    cid = str(message.correlation_id)
    trace = pipeline.config.keys.trace(cid)
    assert await redis.type(trace) == b"list"
    assert 0 < await redis.ttl(trace) <= 600  # the configured worker.trace_ttl
    [raw] = await redis.lrange(trace, 0, -1)
    record = json.loads(raw)
    assert before <= record.pop("started_ms") == record.pop("finished_ms")
    assert record == {**_published(message), "duration_ms": 0, "delivery_count": 0}


async def test_client_writes_no_trace_when_traces_are_off(redis: Redis, prefix: str) -> None:
    pipeline = _pipeline(prefix, trace=False)
    message = await Client(redis, pipeline).publish("hello")
    assert await redis.xlen(pipeline.config.keys.inbox("echo")) == 1
    assert not await redis.exists(pipeline.config.keys.trace(str(message.correlation_id)))


async def test_a_trace_key_of_another_type_does_not_fail_the_publish(
    redis: Redis, prefix: str
) -> None:
    pipeline = _pipeline(prefix)
    keys = pipeline.config.keys
    client = Client(redis, pipeline)
    message = client.new_message(UserRequest(text="hello"))
    broken = keys.trace(str(message.correlation_id))
    await redis.set(broken, b"not a list")
    await client.send(message)  # raising here would invite a retry that sends it twice
    [(_id, fields)] = await redis.xrange(keys.inbox("echo"))
    assert json.loads(fields[b"m"])["message_id"] == str(message.message_id)
    assert await redis.get(broken) == b"not a list"
    assert await redis.ttl(broken) == -1


def _published(message: AgentMessage) -> dict[str, object]:
    """What the client's ``published`` record says of ``message`` (timings aside)."""
    return {
        "agent": "client",
        "outcome": "published",
        "message_id": str(message.message_id),
        "correlation_id": str(message.correlation_id),
        "message_type": "user.request",
        "from_agent": "client",
        "to_agent": "echo",
    }


async def test_load_trace_reads_client_and_worker_records(redis: Redis, prefix: str) -> None:
    pipeline = _pipeline(prefix)
    keys = pipeline.config.keys
    client = Client(redis, pipeline)
    message = await client.publish("hello")
    cid = str(message.correlation_id)
    handled = message.model_copy(update={"message_id": uuid.uuid4()})
    await anyio.sleep(0.03)  # the hop starts after the publish (events are in time order)
    record = Tracer("echo", "echo-0").record(
        handled, Entry("s", b"1-0", {}, delivery_count=2), "handled", time.time() - 0.01
    )
    await redis.rpush(keys.trace(cid), b"garbage", record)

    events = await load_trace(TraceLog(redis, keys), DeadLetterStore(redis, keys), cid)
    assert [(e["agent"], e["outcome"]) for e in events] == [
        ("client", "published"),
        ("echo", "handled"),
    ]
    published, hop = events
    assert published == {
        **_published(message),
        "started_ms": published["started_ms"],
        "finished_ms": published["started_ms"],
        "duration_ms": 0.0,
        "delivery_count": 0,
        "entry_id": "0",
        "outputs": [],
    }
    assert isinstance(published["started_ms"], int)
    assert hop["message_id"] == str(handled.message_id) and hop["delivery_count"] == 2
    assert hop["duration_ms"] >= 10 and hop["outputs"] == [] and hop["reason"] == ""
    assert hop["entry_id"] == "2"


async def test_trace_tail_prints_each_new_record_once(
    redis: Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = _pipeline(prefix)
    client = Client(redis, pipeline)
    message = await client.publish("hello")
    tail = TraceTail(TraceLog(redis, pipeline.config.keys), message)
    await tail.poll(block=None)
    assert capsys.readouterr().err == ""  # the client's own publish record is not a hop

    trace = pipeline.config.keys.trace(str(message.correlation_id))
    tracer = Tracer("echo", "echo-0")
    for n in range(2):
        hop: AgentMessage = message.model_copy(update={"message_id": uuid.uuid4()})
        await redis.rpush(trace, tracer.record(hop, Entry("s", b"1-0", {}), "handled", 0.0))
        await tail.poll(block=1)
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "echo" in lines[0] and lines[0].endswith("handled"), n
    await tail.poll(block=None)
    assert capsys.readouterr().err == ""
    assert tail.next == 3
