"""One delivery's way through the worker, after the loop read it:

* the :class:`Delivery` (one object per entry read);
* the :class:`MessageContext` the agent's handler gets, its outputs queued as :class:`Output`
  until the commit (both re-exported by agent_runtime.agent);
* the middleware chain around the agent's handler, with the handler's policy innermost
  (:class:`PolicyMiddleware`: the handler policy and the request's deadline; it reports, the
  fate function decides);
* the commit: records built from finished deliveries (:func:`build_commit`, trace records by
  :class:`Tracer`) and written until the server takes them (:func:`commit_until_done`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio

from agent_runtime.backoff import Backoff
from agent_runtime.codec import Codec
from agent_runtime.errors import (
    AgentRuntimeError,
    BreakerOpen,
    DeadlineExceeded,
    HandlerControl,
    RoutingError,
)
from agent_runtime.limits import too_deep
from agent_runtime.policies.clock import SCOPE, DeliveryScope, RedisClock
from agent_runtime.policies.runner import CallStats, Policy
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import (
    Commit,
    DeadLetter,
    Entry,
    Handled,
    StreamBus,
    Unwritable,
    Write,
)
from protocols.base import Payload
from protocols.envelope import AgentMessage

if TYPE_CHECKING:
    from agent_runtime.config.routing import Routing

#: Seconds a request's reply stream lives after its last write.
REPLY_TTL = 24 * 3600


class Output(NamedTuple):
    """One message to write: the stream it goes to and the envelope. A named tuple: built
    once per output on the handler's path (a frozen dataclass's ``__init__`` cost about
    5,200 instructions more per output: 9,592 against 4,351)."""

    stream: str
    message: AgentMessage
    ttl: int | None = None  # seconds; set on per-request streams (replies)
    maxlen: int | None = None  # XADD MAXLEN ~: only for streams no consumer group reads
    terminal: bool = False  # the request's terminal reply: written at most once per request


def server_now(offset: float) -> datetime:
    """The Redis server's time, from this host's clock and the worker's measured offset."""
    return datetime.fromtimestamp(time.time() + offset, UTC)


class MessageContext:
    """One delivery of one message to one handler."""

    __slots__ = (
        "_base_log",
        "_hop",
        "_log",
        "_outputs",
        "agent",
        "clock_offset",
        "delivery_count",
        "entry_id",
        "message",
        "payload",
        "routing",
        "stream",
    )

    def __init__(
        self,
        *,
        agent: str,
        message: AgentMessage,
        payload: Payload,
        stream: str,
        entry_id: bytes,
        delivery_count: int,
        routing: Routing,
        log: Any,
        clock_offset: float = 0.0,
    ) -> None:
        """``clock_offset``: the Redis server's clock minus this host's (seconds); outputs
        are stamped on the server's clock, the one freshness is judged by."""
        self.agent = agent
        self.clock_offset = clock_offset
        self.message = message
        self.payload = payload
        self.stream = stream
        self.entry_id = entry_id
        self.delivery_count = delivery_count
        self.routing = routing
        self._base_log = log
        self._log: Any = None
        self._outputs: list[Output] = []
        self._hop: str | None = None  # the outputs' traceparent, formatted on first use

    @property
    def log(self) -> Any:
        """A logger bound to this message's ids (bound on first use: the hot path stays lean)."""
        if self._log is None:
            message = self.message
            self._log = self._base_log.bind(
                correlation_id=str(message.correlation_id),
                message_id=str(message.message_id),
                causation_id=str(message.causation_id or ""),
                message_type=message.message_type,
                delivery_count=self.delivery_count,
            )
        return self._log

    @property
    def outputs(self) -> list[Output]:
        return self._outputs

    def send(
        self,
        payload: Payload,
        *,
        to: str | None = None,
        now: datetime | None = None,
        message_id: uuid.UUID | None = None,
    ) -> AgentMessage:
        """Queue ``payload`` for agent ``to`` (default: the agent that consumes its type).
        ``message_id``: an id fixed in advance instead of the derived one (it must be just as
        deterministic: the router's tasks, whose approval the safety checker signed for it)."""
        target = to or self.routing.agent_for(payload.message_type)
        stream = self.routing.stream_for(target, self.message.correlation_id)
        return self._queue(stream, target, payload, now, message_id=message_id)

    def reply(self, payload: Payload, *, now: datetime | None = None) -> AgentMessage:
        """Queue ``payload`` on the request's reply stream (``reply_to``)."""
        if self.message.reply_to is None:
            raise RoutingError(f"message {self.message.message_id} has no reply_to stream")
        return self._queue(
            self.message.reply_to, "client", payload, now, ttl=REPLY_TTL, terminal=True
        )

    def send_to_stream(
        self,
        stream: str,
        payload: Payload,
        *,
        to_agent: str = "client",
        now: datetime | None = None,
        maxlen: int | None = None,
    ) -> AgentMessage:
        """Queue ``payload`` on an explicit stream (e.g. the shared reports stream).

        ``maxlen`` caps the stream at about that many entries (XADD MAXLEN ~). Only for
        streams that no consumer group reads: on Redis < 8.2 and Valkey, MAXLEN also drops
        entries still pending or not yet delivered to a group."""
        return self._queue(stream, to_agent, payload, now, maxlen=maxlen)

    def clear_outputs(self) -> None:
        """Forget queued outputs (used by retry policies before a fresh attempt)."""
        self._outputs.clear()

    def _queue(
        self,
        stream: str,
        to_agent: str,
        payload: Payload,
        now: datetime | None,
        ttl: int | None = None,
        maxlen: int | None = None,
        terminal: bool = False,
        message_id: uuid.UUID | None = None,
    ) -> AgentMessage:
        hop = self._hop
        if hop is None:
            hop = self._hop = self.message.hop_traceparent()
        message = self.message.derive(
            index=len(self._outputs),
            from_agent=self.agent,
            to_agent=to_agent,
            message_type=payload.message_type,
            schema_version=payload.schema_version,
            payload=payload.model_dump(mode="json"),
            now=now or server_now(self.clock_offset),
            traceparent=hop,
            message_id=message_id,
        )
        self._outputs.append(Output(stream, message, ttl, maxlen, terminal))
        return message


Handler = Callable[[MessageContext], Awaitable[None]]


class Middleware(Protocol):
    """Wraps every handler call: ``await call_next(ctx)`` runs the rest of the chain."""

    async def handle(self, ctx: MessageContext, call_next: Handler) -> None: ...


def chain(middleware: Sequence[Middleware], handler: Handler) -> Handler:
    """The handler wrapped in ``middleware`` (outermost first), built once per worker."""
    call = handler
    for layer in reversed(middleware):
        call = _bind(layer, call)
    return call


def _bind(layer: Middleware, call_next: Handler) -> Handler:
    """``ctx -> layer.handle(ctx, call_next)``: returns the layer's own coroutine, so a layer
    costs no extra coroutine of its own per message."""
    handle = layer.handle

    def call(ctx: MessageContext) -> Awaitable[None]:
        return handle(ctx, call_next)

    return call


class HandlerFailed(AgentRuntimeError):
    """PolicyMiddleware's report of a delivery that did not succeed: the ``error`` (None: the
    deadline passed before handling), ``failed`` (the work really ran and failed in this
    delivery; an open breaker's refusals are not failures) and ``left`` (seconds before the
    message deadline when it ended; None: no deadline). Raised ``from`` the error; the worker
    unwraps it and decides the fate (agent_runtime/worker/fate.py)."""

    def __init__(self, error: Exception | None, *, failed: bool, left: float | None) -> None:
        super().__init__(repr(error) if error is not None else "deadline passed before handling")
        self.error = error
        self.failed = failed
        self.left = left


class PolicyMiddleware:
    """Worker middleware: runs the handler under the handler policy and the delivery's
    deadline, and reports what it saw (:class:`HandlerFailed`); it decides no fates."""

    def __init__(
        self, policy: Policy, clock: RedisClock, *, handler_timeout: float | None = None
    ) -> None:
        """``handler_timeout``: the worker's own cut of every handler call (its watchdog,
        agent_runtime/worker/housekeeping.py); when given, a deadline further away than that
        cut (plus the watchdog's precision and a second) gets no cancel scope of its own: the
        watchdog ends the call first. Measured: a scope costs about 46,000 instructions per
        message (docs/benchmarks.md, "Issue 17: handler and output path")."""
        self.policy = policy
        self.clock = clock
        spec = policy.spec  # nothing to do around the handler but the deadline: lean path
        self._plain = (
            spec.retry.attempts == 1
            and policy.breaker is None
            and spec.timeout.attempt is None
            and spec.timeout.total is None
        )
        self._cut = (
            math.inf
            if handler_timeout is None
            else handler_timeout + min(0.5, handler_timeout / 10) + 1.0
        )

    async def handle(self, ctx: MessageContext, call_next: Handler) -> None:
        message = ctx.message
        deadline = None if message.deadline is None else await self.clock.deadline_of(message)
        scope = DeliveryScope(deadline)
        if deadline is not None and scope.expired():
            raise HandlerFailed(None, failed=False, left=scope.remaining())
        stats = None
        token = SCOPE.set(scope)  # the delivery every nested call policy sees
        try:
            if self._plain and deadline is None:
                await call_next(ctx)  # nothing to apply around it
            elif self._plain:  # only the deadline around it: no Policy.run bookkeeping
                left = scope.remaining()
                if left is not None and left > self._cut:  # the watchdog cuts the call first
                    await call_next(ctx)
                else:
                    await _within(scope, call_next, ctx)
            else:
                stats = CallStats()
                await self.policy.run(_attempt, ctx, call_next, stats=stats)
        except HandlerControl:
            raise
        except Exception as exc:
            failed = scope.failures > 0 or not isinstance(exc, BreakerOpen)
            raise HandlerFailed(exc, failed=failed, left=scope.remaining()) from exc
        finally:
            SCOPE.reset(token)
        if stats is not None and stats.attempts > 1:
            ctx.log.info("handler_succeeded_after_retries", attempts=stats.attempts)


async def _within(scope: DeliveryScope, call_next: Handler, ctx: MessageContext) -> None:
    """``call_next(ctx)``, cut at the delivery's deadline (if any) as ``Policy.run`` would
    cut it: :class:`DeadlineExceeded`."""
    left = scope.remaining()
    if left is None:
        await call_next(ctx)
        return
    with anyio.move_on_after(left) as cut:
        await call_next(ctx)
    if cut.cancelled_caught:
        raise DeadlineExceeded("the handler: the deadline passed")


async def _attempt(ctx: MessageContext, call_next: Handler) -> None:
    ctx.clear_outputs()  # a retried attempt starts with no queued outputs
    await call_next(ctx)


@dataclass(slots=True, eq=False)
class Delivery:
    """One read of one stream entry, from XREADGROUP to its commit: the worker holds one map
    ``(stream, entry id) -> Delivery`` (its in-flight set; capacity is the map's size) and
    commits finished Deliveries.

    ``entry`` carries the stream, id, fields and delivery count (the attempt). ``message`` /
    ``payload``: the decoded envelope (None when it did not decode: then ``letter`` says
    why). ``claimed``: this delivery holds its message id (a copy read meanwhile is acked as
    a duplicate) until its done mark is committed. ``ctx``: the handler's context, whose
    queued outputs the commit writes. ``started``: ``time.time()`` when the handler started.
    ``outcome``: ``handled``, ``skipped``, ``duplicate`` or ``dead_lettered`` once decided.
    ``letter``: a dead delivery's dead letter (reason, text, failure reply)."""

    entry: Entry
    message: AgentMessage | None = None
    payload: Payload | None = None
    claimed: bool = False
    ctx: MessageContext | None = None
    started: float = 0.0
    outcome: str = ""
    letter: DeadLetter | None = None

    @property
    def key(self) -> tuple[str, bytes]:
        """The lease key: what the worker's map and the PEL know this delivery by."""
        return (self.entry.stream, self.entry.entry_id)


def decoded(delivery: Delivery) -> AgentMessage:
    """The envelope of a delivery that decoded (every one past the worker's intake)."""
    message = delivery.message
    assert message is not None
    return message


class Tracer:
    """Builds per-request trace records: JSON objects (agent, consumer, correlation_id,
    message_id, causation_id, message_type, from_agent, to_agent, outcome, reason,
    delivery_count, started_ms, finished_ms, duration_ms, outputs), each one element of the
    request's trace list (``keys.trace``); read with :func:`expand_trace`.

    A record is written for every handled message, so it is formatted directly: ids are UUID
    text (nothing to escape), every other string goes through the JSON encoder, names (agents,
    message types, outcomes) once per process from a small cache. Measured gain: 14,911
    instructions per record against 84,794 for ``json.dumps`` of the same fields, 37.5 % of the
    runtime's instructions per message with traces on (docs/benchmarks.md, "Speed tricks")."""

    __slots__ = ("_finished", "_head", "_middles", "_now", "_quoted", "agent", "consumer")

    def __init__(self, agent: str, consumer: str) -> None:
        self.agent = agent
        self.consumer = consumer
        self._head = f'{{"agent":{_quote(agent)},"consumer":{_quote(consumer)},"correlation_id":"'
        self._quoted: dict[str, str] = {}  # from_agent -> JSON string (a handful of names)
        # (message_type, from_agent, to_agent, outcome) -> that stretch of the record, formatted
        self._middles: dict[tuple[str, str, str, str], str] = {}
        self._now = 0.0  # the clock reading _finished was formatted for (one per commit)
        self._finished = ""

    def record(
        self,
        message: AgentMessage,
        entry: Entry,
        outcome: str,
        started: float,
        reason: str = "",
        outputs: Sequence[Output] = (),
        now: float | None = None,
    ) -> bytes:
        """The record of ``message``; ``now`` (``time.time()``, read here when not given) is
        when its fate was decided: a commit passes one reading for all its records, so the
        ``finished_ms`` text is formatted once per commit."""
        if now is None:
            now = time.time()
        if now != self._now:
            self._now = now
            self._finished = f'"finished_ms":{int(now * 1000)},"duration_ms":'
        if not started:
            started = now
        names = (message.message_type, message.from_agent, message.to_agent, outcome)
        middle = self._middles.get(names) or self._middle(names)
        causation = message.causation_id
        micros = int((now - started) * 1_000_000)  # duration_ms with three decimals, no float
        if micros < 0:  # the wall clock stepped back
            micros = 0
        millis, rest = divmod(micros, 1000)
        listed = ",".join(self._output(o.message) for o in outputs) if outputs else ""
        return (
            f'{self._head}{message.correlation_text}","message_id":"{message.id_text}",'
            f'"causation_id":"{"" if causation is None else causation}",{middle}'
            f'"reason":{_quote(reason) if reason else EMPTY},'
            f'"delivery_count":{entry.delivery_count},"started_ms":{int(started * 1000)},'
            f'{self._finished}{millis}.{_THOUSANDTHS[rest]},"outputs":[{listed}]}}'
        ).encode()

    def _middle(self, names: tuple[str, str, str, str]) -> str:
        kind, sender, target, fate = (self._quoted.get(n) or self._quote(n) for n in names)
        middle = (
            f'"message_type":{kind},"from_agent":{sender},"to_agent":{target},"outcome":{fate},'
        )
        if len(self._middles) < 1024:
            self._middles[names] = middle
        return middle

    def _output(self, message: AgentMessage) -> str:
        quoted = self._quoted
        kind = quoted.get(message.message_type) or self._quote(message.message_type)
        target = quoted.get(message.to_agent) or self._quote(message.to_agent)
        return f'{{"message_id":"{message.id_text}","message_type":{kind},"to":{target}}}'

    def _quote(self, text: str) -> str:
        """JSON string of a name seen again and again (agent names, outcomes), cached."""
        quoted = _quote(text)
        if len(self._quoted) < 1024:
            self._quoted[text] = quoted
        return quoted


EMPTY = '""'
_THOUSANDTHS = tuple(f"{n:03d}" for n in range(1000))  # the fraction of duration_ms, as text


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def expand_trace(raw: bytes) -> dict[bytes, bytes]:
    """A trace record (one element of the request's trace list: a JSON object, written by
    the workers and by the client's publish) as flat text fields (``outputs`` as a JSON list);
    empty if it is not a JSON object, or nests deeper than ``limits.MAX_DEPTH``."""
    if too_deep(raw):
        return {}
    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(record, dict):
        return {}
    return {
        key.encode(): (value if isinstance(value, str) else json.dumps(value)).encode()
        for key, value in record.items()
    }


def build_commit(
    finished: list[Delivery],
    *,
    codec: Codec,
    keys: Keys,
    tracer: Tracer | None,
    trace_ttl: int,
) -> Commit:
    """Outputs, done ids, trace entries, dead letters (with failure replies) and acks of
    everything finished. A terminal reply is guarded by its request's outcome key (one
    terminal reply per request)."""
    commit = Commit(trace_ttl=trace_ttl)
    handled, dead, traced = commit.handled, commit.dead, commit.traces
    trace_key = keys.trace
    now = time.time()  # the finished_ms of every record of this commit
    for item in finished:
        ctx, entry, message = item.ctx, item.entry, item.message
        if item.letter is not None:
            dead.append(item.letter)
            if tracer is not None and message is not None:
                record = tracer.record(
                    message, entry, item.outcome, 0.0, item.letter.reason, now=now
                )
                traced.append((trace_key(message.correlation_text), record))
            continue
        if ctx is None or message is None:
            handled.append(Handled(entry))  # a duplicate: ack only
            continue
        queued = ctx.outputs
        writes = [
            Write(
                out.stream,
                codec.encode(out.message, out.stream),
                out.ttl,
                out.maxlen,
                keys.outcome(message.correlation_text) if out.terminal else None,
            )
            for out in queued
        ]
        handled.append(Handled(entry, message.id_text, writes))
        if tracer is not None:
            record = tracer.record(
                message, entry, item.outcome, item.started, outputs=queued, now=now
            )
            traced.append((trace_key(message.correlation_text), record))
    return commit


async def commit_until_done(
    bus: StreamBus, commit: Commit, messages: int, log: Any
) -> list[Unwritable]:
    """Retry a failed commit (OOM, lost connection) with a jittered backoff; its entries
    stay pending and leased meanwhile, so nothing is acked before its outputs are written.
    Each commit starts at the shortest delay again. Returns the inputs refused for a
    reason of their own (see StreamBus.commit)."""
    backoff = Backoff(0.05, 5.0)
    while True:
        try:
            return await bus.commit(commit)
        except Exception as exc:
            delay = round(backoff.next_delay(), 3)
            log.error("commit_failed", error=repr(exc), retry_in=delay, messages=messages)
            await anyio.sleep(delay)
