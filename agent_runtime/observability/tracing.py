"""W3C trace context across hops, and OpenTelemetry spans when the SDK is installed.

:class:`TraceContextMiddleware` (a worker middleware) gives each handled message a span:

* trace id: from the incoming ``traceparent``, or else the request's correlation id (a UUID is
  exactly 32 hex digits), so every hop of one request shares one trace id that an operator can
  search by correlation id;
* parent: the incoming ``traceparent``'s span, or else a span id derived from the message id;
* the outputs of the handler carry ``traceparent`` = this hop's span, so the next hop's span
  is its child: spans are linked hop by hop.

Without OpenTelemetry (or with no tracer provider configured) the span id is derived from the
message id and nothing is exported: outputs get that context when they are queued
(``AgentMessage.hop_traceparent``), and the worker runs without this middleware. With
``pip install 'agent-runtime[otel]'`` and a tracer provider set up by the process (e.g.
``opentelemetry-instrument`` or your own SDK set-up), a real span named
``handle <message_type>`` is recorded per handled message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from agent_runtime.agent import MessageContext
from protocols.envelope import format_traceparent, parse_traceparent

Handler = Callable[[MessageContext], Awaitable[None]]

try:  # optional dependency
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
except ImportError:  # pragma: no cover - exercised when the extra is absent
    otel_trace = None  # type: ignore[assignment]


def incoming_context(ctx: MessageContext) -> tuple[str, str]:
    """(trace id, parent span id) this hop continues."""
    parsed = parse_traceparent(ctx.message.traceparent)
    if parsed:
        return parsed
    parent = ctx.message.causation_id or ctx.message.message_id
    return ctx.message.correlation_id.hex, parent.hex[:16]


class TraceContextMiddleware:
    """Worker middleware: one span per handled message, outputs carry its traceparent."""

    def __init__(self, tracer: Any = None) -> None:
        """``tracer``: an OpenTelemetry tracer; None = the global provider's (when the API is
        installed); False = no spans, trace context only."""
        if tracer is None and otel_trace is not None and _sdk_configured():
            tracer = otel_trace.get_tracer("agent_runtime")
        self.tracer = tracer or None

    async def handle(self, ctx: MessageContext, call_next: Handler) -> None:
        if self.tracer is None:  # no spans: outputs already carry the hop's trace context
            await call_next(ctx)
            return
        trace_id, parent_id = incoming_context(ctx)
        with self._span(ctx, trace_id, parent_id) as span_id:
            await call_next(ctx)
            stamp_outputs(ctx, format_traceparent(trace_id, span_id))

    @contextlib.contextmanager
    def _span(self, ctx: MessageContext, trace_id: str, parent_id: str) -> Iterator[str]:
        fallback = ctx.message.message_id.hex[:16]
        if self.tracer is None or otel_trace is None:
            yield fallback
            return
        parent = otel_trace.set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    trace_id=int(trace_id, 16),
                    span_id=int(parent_id, 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
            )
        )
        with self.tracer.start_as_current_span(
            f"handle {ctx.message.message_type}",
            context=parent,
            kind=otel_trace.SpanKind.CONSUMER,
            record_exception=True,
            set_status_on_exception=True,
            attributes=_attributes(ctx),
        ) as span:
            span_context = span.get_span_context()
            try:
                recording = span.is_recording() and span_context.is_valid
                yield format(span_context.span_id, "016x") if recording else fallback
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise


def _sdk_configured() -> bool:
    """True when the process set a real tracer provider (not the API's no-op proxy): spans
    are only worth their per-message cost when something records them."""
    assert otel_trace is not None
    provider = otel_trace.get_tracer_provider()
    return not isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider)


def _attributes(ctx: MessageContext) -> dict[str, Any]:
    message = ctx.message
    return {
        "messaging.system": "redis_streams",
        "messaging.destination.name": ctx.stream,
        "messaging.message.id": str(message.message_id),
        "messaging.message.conversation_id": str(message.correlation_id),
        "agent_runtime.agent": ctx.agent,
        "agent_runtime.message_type": message.message_type,
        "agent_runtime.from_agent": message.from_agent,
        "agent_runtime.delivery_count": ctx.delivery_count,
    }


def stamp_outputs(ctx: MessageContext, traceparent: str) -> None:
    """Set ``traceparent`` on every output the handler queued (before the worker writes them)."""
    outputs = ctx.outputs
    for i, out in enumerate(outputs):
        message = out.message.model_copy(update={"traceparent": traceparent})
        outputs[i] = out._replace(message=message)  # ttl, maxlen, terminal kept
