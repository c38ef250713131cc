"""W3C trace context per hop: outputs carry this hop's span; OpenTelemetry spans when the SDK
is installed (that test runs only then)."""

from __future__ import annotations

import uuid

import pytest
import structlog

from agent_runtime.agent import MessageContext
from agent_runtime.config.routing import Routing
from agent_runtime.observability.tracing import TraceContextMiddleware, parse_traceparent
from agent_runtime.transport.keys import Keys
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.agents import Echoed

pytestmark = pytest.mark.anyio


def context(traceparent: str | None = None) -> MessageContext:
    message = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload={"text": "hi"},
        timestamp=utcnow(),
        traceparent=traceparent,
    )
    return MessageContext(
        agent="echo",
        message=message,
        payload=UserRequest(text="hi"),
        stream="p:inbox:echo",
        entry_id=b"1-1",
        delivery_count=1,
        routing=Routing(Keys("p"), {"test.echoed": "sink"}),
        log=structlog.get_logger(),
    )


async def send_one(ctx: MessageContext) -> None:
    ctx.send(Echoed(text="x", worker_pid=1, delivery_count=1))


async def test_without_a_tracer_the_trace_id_is_the_correlation_id() -> None:
    ctx = context()
    await TraceContextMiddleware(tracer=False).handle(ctx, send_one)
    [out] = ctx.outputs
    trace_id, span_id = parse_traceparent(out.message.traceparent) or ("", "")
    assert trace_id == ctx.message.correlation_id.hex
    assert span_id == ctx.message.message_id.hex[:16]
    assert (
        out.message.message_id
        == ctx.message.derive(
            index=0,
            from_agent="echo",
            to_agent="sink",
            message_type="test.echoed",
            schema_version=1,
            payload={},
            now=utcnow(),
        ).message_id
    )  # ids unchanged


async def test_an_incoming_traceparent_is_continued() -> None:
    incoming = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    ctx = context(incoming)
    await TraceContextMiddleware(tracer=False).handle(ctx, send_one)
    trace_id, _span = parse_traceparent(ctx.outputs[0].message.traceparent) or ("", "")
    assert trace_id == "ab" * 16


async def test_otel_spans_are_linked_hop_by_hop() -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    middleware = TraceContextMiddleware(tracer=provider.get_tracer("test"))

    first = context()
    await middleware.handle(first, send_one)
    hop = first.outputs[0].message
    second = MessageContext(
        agent="sink",
        message=hop,
        payload=UserRequest(text="x"),
        stream="p:inbox:sink",
        entry_id=b"1-2",
        delivery_count=1,
        routing=first.routing,
        log=structlog.get_logger(),
    )

    async def fail(ctx: MessageContext) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await middleware.handle(second, fail)
    one, two = exporter.get_finished_spans()
    assert one.name == "handle user.request" and two.name == "handle test.echoed"
    assert one.context.trace_id == two.context.trace_id == first.message.correlation_id.int
    assert two.parent is not None and two.parent.span_id == one.context.span_id
    assert hop.traceparent == f"00-{first.message.correlation_id.hex}-{one.context.span_id:016x}-01"
    assert one.attributes["agent_runtime.agent"] == "echo"
    assert not two.status.is_ok


async def test_outputs_carry_the_hop_context_with_no_middleware_at_all() -> None:
    incoming = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    for traceparent, trace_id in ((None, None), (incoming, "ab" * 16)):
        ctx = context(traceparent)
        await send_one(ctx)  # what a worker without TraceContextMiddleware runs
        [out] = ctx.outputs
        expected = trace_id or ctx.message.correlation_id.hex
        assert out.message.traceparent == f"00-{expected}-{ctx.message.message_id.hex[:16]}-01"


def test_the_worker_skips_the_middleware_when_no_tracer_records_spans() -> None:
    from agent_runtime.config.model import PipelineConfig
    from agent_runtime.config.pipeline import Pipeline
    from agent_runtime.observability.process import WorkerObservability

    pipeline = Pipeline.build(
        PipelineConfig.model_validate(
            {
                "agents": {"noop": {"class": "tests.fixtures.agents:Noop"}},
                "allowed_modules": ["tests"],
            }
        )
    )
    obs = WorkerObservability.create(pipeline, "noop", None)
    assert obs.middleware == []  # no OpenTelemetry SDK configured in this process


def test_stamped_outputs_keep_their_ttl_maxlen_and_terminal_flag() -> None:
    """A span's traceparent replaces only the envelope: a terminal reply stays guarded (one
    terminal reply per request), a capped stream stays capped."""
    from agent_runtime.observability.tracing import stamp_outputs

    ctx = context()
    reply_to = Keys("p").reply(str(ctx.message.correlation_id))
    ctx.message = ctx.message.model_copy(update={"reply_to": reply_to})
    ctx.reply(Echoed(text="done", worker_pid=1, delivery_count=1))
    ctx.send_to_stream("reports", Echoed(text="r", worker_pid=1, delivery_count=1), maxlen=100)
    before = list(ctx.outputs)
    stamp_outputs(ctx, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    for old, new in zip(before, ctx.outputs, strict=True):
        assert new.message.traceparent == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        assert (new.stream, new.ttl, new.maxlen, new.terminal) == (
            old.stream,
            old.ttl,
            old.maxlen,
            old.terminal,
        )
    assert ctx.outputs[0].terminal and ctx.outputs[1].maxlen == 100
