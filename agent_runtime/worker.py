"""One agent type's consume loop in one process.

Flow: XREADGROUP (batched, BLOCK) -> decode -> de-duplicate (one MGET per batch) -> handler
tasks (bounded concurrency, each under the middleware chain and a timeout) -> the committer
writes outputs + done markers + dead letters + XACKs of everything finished since its last
round trip, in one pipeline. Side loops renew leases of in-flight entries, reclaim entries of
dead consumers, redeliver failed entries after backoff, trim the inboxes and beat the
heartbeat. On stop: no more reads, in-flight handlers get ``drain_timeout``, what is still
running is cancelled and handed back (made immediately reclaimable), the committer flushes.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup

from agent_runtime.agent import Agent, AgentRuntime, MessageContext, Output
from agent_runtime.codec import Codec, Decoded
from agent_runtime.errors import DecodeError, Reject, Retry, Skip
from agent_runtime.observer import Observer
from agent_runtime.pipeline import Pipeline
from agent_runtime.settings import WorkerSettings
from agent_runtime.transport.streams import Commit, DeadLetter, Entry, StreamBus
from protocols.envelope import AgentMessage, utcnow

Handler = Callable[[MessageContext], Awaitable[None]]


class Middleware(Protocol):
    async def handle(self, ctx: MessageContext, call_next: Handler) -> None: ...


@dataclass(slots=True)
class _Finished:
    entry: Entry
    ctx: MessageContext | None
    started: float = 0.0  # time.time() when the handler started
    outcome: str = "handled"


def default_consumer_name(agent: str, slot: int | str = 0) -> str:
    """Stable per host and slot, so a restarted worker re-reads its own pending entries."""
    return f"{agent}-{socket.gethostname()}-{slot}"


class Worker:
    """Consumes one agent type's inbox(es). Construct, then ``await run()``."""

    def __init__(self, pipeline: Pipeline, agent: str, redis: Any, *, consumer: str,
                 cluster: bool = False, codec: Codec | None = None,
                 middleware: Sequence[Middleware] = (), observer: Observer | None = None,
                 extras: dict[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.agent_type = pipeline.agents[agent]
        self.name = agent
        self.settings: WorkerSettings = pipeline.worker_settings(agent)
        self.keys = pipeline.config.keys
        self.redis = redis
        self.consumer = consumer
        self.codec = codec or Codec(pipeline.schemas, max_bytes=self.settings.max_message_bytes)
        self.bus = StreamBus(redis, group=self.keys.group(agent), consumer=consumer,
                             cluster=cluster, done_ttl=self.settings.done_ttl,
                             dlq_maxlen=self.settings.dlq_maxlen)
        self.streams = pipeline.routing.inboxes(agent)
        self.observer = observer or Observer()
        self.log = structlog.get_logger("agent_runtime.worker").bind(agent=agent,
                                                                     consumer=consumer)
        self.runtime = AgentRuntime(agent, self.keys, pipeline.routing, redis, self.log,
                                    dict(extras or {}))
        self.instance: Agent[Any] = self.agent_type.cls(self.agent_type.config, self.runtime)
        self._chain = _chain(middleware, self.instance.handle)
        self._inflight: dict[tuple[str, bytes], Entry] = {}
        self._handling: set[uuid.UUID] = set()  # message ids with a handler running/delayed
        self._delayed: dict[tuple[str, bytes], tuple[float, Entry, bool]] = {}
        self._finished: list[_Finished] = []
        self._dead: list[DeadLetter] = []
        self._dead_traces: list[dict[bytes, bytes]] = []
        self._committing = False
        self._handlers: TaskGroup | None = None
        self.processed = 0
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the worker to drain and stop (call from the worker's event loop)."""
        if not hasattr(self, "_stopping"):
            self._stopping = anyio.Event()
        self._stopping.set()
        if hasattr(self, "_capacity"):
            self._capacity.set()

    def _make_events(self) -> None:
        # anyio events need a running loop: created when run() starts.
        self._finished_event = anyio.Event()
        self._capacity = anyio.Event()
        self._delay_wakeup = anyio.Event()
        if not hasattr(self, "_stopping"):
            self._stopping = anyio.Event()

    async def run(self) -> None:
        self._make_events()
        for stream in self.streams:
            await self.bus.ensure_group(stream)
        await self.instance.start()
        self.log.info("worker_started", streams=self.streams, pid=os.getpid(),
                      concurrency=self.settings.concurrency)
        try:
            async with anyio.create_task_group() as side:
                side.start_soon(self._commit_loop)
                side.start_soon(self._lease_loop)
                side.start_soon(self._heartbeat_loop)
                async with anyio.create_task_group() as handlers:
                    self._handlers = handlers
                    handlers.start_soon(self._drain_guard, handlers)
                    await self._recover_own_pending()
                    side.start_soon(self._reclaim_loop)
                    side.start_soon(self._delay_loop)
                    side.start_soon(self._trim_loop)
                    await self._read_loop()
                await self._flush_remaining()
                side.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._hand_back()
                await self.instance.stop()
                await self.redis.delete(self.keys.heartbeat(self.name, self.consumer))
        self.log.info("worker_stopped", processed=self.processed)

    async def _drain_guard(self, handlers: TaskGroup) -> None:
        """After stop, give in-flight handlers drain_timeout, then cancel them."""
        await self._stopping.wait()
        await anyio.sleep(self.settings.drain_timeout)
        handlers.cancel_scope.cancel()

    # ------------------------------------------------------------------ intake
    async def _read_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self._inflight)
            if free <= 0:
                self._capacity = anyio.Event()
                await self._capacity.wait()
                continue
            entries = await self.bus.read_new(self.streams, min(free, self.settings.batch_size),
                                              self.settings.block_ms)
            if entries:
                await self._dispatch(entries)
        # all reads stopped: the handler group ends when in-flight work is done
        self._handlers_done_when_idle()

    def _handlers_done_when_idle(self) -> None:
        if self._handlers is not None and not self._inflight_handlers():
            self._handlers.cancel_scope.cancel()

    def _inflight_handlers(self) -> int:
        return len(self._inflight) - len(self._delayed)

    async def _recover_own_pending(self) -> None:
        for stream in self.streams:
            entries = await self.bus.read_own_pending(stream, 10_000)
            if entries:
                self.log.info("own_pending_recovered", stream=stream, count=len(entries))
                await self._dispatch(entries)

    async def _dispatch(self, entries: list[Entry]) -> None:
        """Decode, drop duplicates (one MGET), dead-letter the undeliverable, start handlers."""
        fresh = [e for e in entries if (e.stream, e.entry_id) not in self._inflight]
        decoded: list[tuple[Entry, Decoded]] = []
        for entry in fresh:
            self._inflight[(entry.stream, entry.entry_id)] = entry
            try:
                decoded.append((entry, self.codec.decode(entry.fields)))
            except DecodeError as exc:
                self._dead_letter(entry, exc.reason, exc.detail)
        done_keys = [self.keys.done(self.name, str(d.message.message_id)) for _, d in decoded]
        done = await self.bus.already_done(done_keys)
        for (entry, item), is_done in zip(decoded, done, strict=True):
            if is_done or item.message.message_id in self._handling:
                self.observer.duplicate_dropped(entry)
                self._finish(entry, None)
            elif reason := self._undeliverable(entry, item.message):
                self._dead_letter(entry, *reason, message=item.message)
            else:
                assert self._handlers is not None
                self._handling.add(item.message.message_id)
                self._handlers.start_soon(self._handle, entry, item)
        self.observer.in_flight(len(self._inflight))

    def _undeliverable(self, entry: Entry, message: AgentMessage) -> tuple[str, str] | None:
        if entry.delivery_count > self.settings.max_deliveries:
            return ("max_deliveries", f"delivered {entry.delivery_count} times (cap "
                    f"{self.settings.max_deliveries}); its handler may crash the worker")
        if message.is_expired(utcnow()):
            return ("expired", f"deadline {message.deadline} passed before handling")
        if message.hops > AgentMessage.MAX_HOPS:
            return ("too_many_hops", f"{message.hops} hops (cap {AgentMessage.MAX_HOPS})")
        if message.to_agent != self.name:
            return ("misrouted", f"addressed to {message.to_agent!r}, read by {self.name!r}")
        return None

    # ------------------------------------------------------------------ handling
    async def _handle(self, entry: Entry, item: Decoded) -> None:
        message = item.message
        log = self.log.bind(correlation_id=str(message.correlation_id),
                            message_id=str(message.message_id),
                            causation_id=str(message.causation_id or ""),
                            message_type=message.message_type)
        ctx = MessageContext(agent=self.name, message=message, payload=item.payload,
                             stream=entry.stream, entry_id=entry.entry_id,
                             delivery_count=entry.delivery_count,
                             routing=self.pipeline.routing, log=log)
        started = time.perf_counter()
        wall_started = time.time()
        try:
            with anyio.fail_after(self.settings.handler_timeout):
                await self._chain(ctx)
        except Skip:
            ctx.clear_outputs()
            self._finish(entry, ctx, wall_started, "skipped")
            return
        except Reject as exc:
            self._dead_letter(entry, exc.code, exc.reason, message=message)
            return
        except Retry as exc:
            self.observer.retried(ctx, exc.reason)
            self._retry_later(entry, ctx, exc, exc.delay, counted=exc.count)
            return
        except Exception as exc:  # the last-resort handler: one message never kills the loop
            self.observer.failed(ctx, exc, time.perf_counter() - started)
            self._retry_later(entry, ctx, exc, None, counted=True)
            return
        self.observer.handled(ctx, time.perf_counter() - started)
        self._finish(entry, ctx, wall_started)

    def _retry_later(self, entry: Entry, ctx: MessageContext, exc: BaseException,
                     delay: float | None, *, counted: bool) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if counted and entry.delivery_count >= self.settings.max_deliveries:
            ctx.log.warning("message_failed_finally", error=error,
                            deliveries=entry.delivery_count)
            self._dead_letter(entry, "max_deliveries",
                              f"failed {entry.delivery_count} deliveries; last error: {error}",
                              message=ctx.message)
            return
        if delay is None:
            delay = min(self.settings.retry_backoff * 2 ** (entry.delivery_count - 1),
                        self.settings.retry_backoff_max)
        ctx.log.info("message_retry_scheduled", error=error, delay=delay,
                     deliveries=entry.delivery_count)
        self._handling.discard(ctx.message.message_id)
        self._delayed[(entry.stream, entry.entry_id)] = (time.monotonic() + delay, entry, counted)
        self._wake_delay_loop()

    # ------------------------------------------------------------------ committing
    def _finish(self, entry: Entry, ctx: MessageContext | None, started: float = 0.0,
                outcome: str = "handled") -> None:
        if ctx is not None:
            self._handling.discard(ctx.message.message_id)
        self._finished.append(_Finished(entry, ctx, started, outcome))
        self._finished_event.set()

    def _dead_letter(self, entry: Entry, reason: str, error: str,
                     message: AgentMessage | None = None) -> None:
        extra = {}
        if message is not None:
            self._handling.discard(message.message_id)
            extra = {"correlation_id": str(message.correlation_id),
                     "message_id": str(message.message_id),
                     "message_type": message.message_type}
        self.log.warning("message_dead_lettered", reason=reason, error=error,
                         entry_id=entry.entry_id.decode(), stream=entry.stream, **extra)
        self.observer.dead_lettered(entry, reason, extra.get("message_type"))
        self._dead.append(DeadLetter(entry, self.keys.dlq(self.name), reason, error, extra))
        if message is not None and self.settings.trace:
            self._dead_traces.append(self._trace_fields(message, entry, "dead_lettered",
                                                        time.time(), reason, []))
        self._finished_event.set()

    async def _commit_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._finished_event.wait()
            self._finished_event = anyio.Event()
            finished, self._finished = self._finished, []
            dead, self._dead = self._dead, []
            traces, self._dead_traces = self._dead_traces, []
            commit = self._build_commit(finished, dead, traces)
            self._committing = True
            while True:
                started = time.perf_counter()
                try:
                    await self.bus.commit(commit)
                    break
                except Exception as exc:  # OOM, connection loss: keep pending, retry the batch
                    self.log.error("commit_failed", error=repr(exc), retry_in=backoff,
                                   messages=len(finished) + len(dead))
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            backoff = 0.05
            self._committing = False
            self.observer.committed(len(finished) + len(dead), time.perf_counter() - started)
            self._release([f.entry for f in finished] + [d.entry for d in dead])

    def _build_commit(self, finished: list[_Finished], dead: list[DeadLetter],
                      traces: list[dict[bytes, bytes]]) -> Commit:
        commit = Commit(dead=dead)
        trace_ttl = self.settings.trace_ttl
        for item in finished:
            ctx = item.ctx
            if ctx is not None:
                for out in ctx.outputs:
                    commit.outputs.append((out.stream, self.codec.encode(out.message), out.ttl))
                commit.done_keys.append(self.keys.done(self.name, str(ctx.message.message_id)))
                if self.settings.trace:
                    fields = self._trace_fields(ctx.message, item.entry, item.outcome,
                                                item.started, "", ctx.outputs)
                    commit.outputs.append((self.keys.trace(str(ctx.message.correlation_id)),
                                           fields, trace_ttl))
            commit.ack(item.entry)
        for fields in traces:
            commit.outputs.append((self.keys.trace(fields[b"correlation_id"].decode()), fields,
                                   trace_ttl))
        for letter in dead:
            commit.ack(letter.entry)
        return commit

    def _trace_fields(self, message: AgentMessage, entry: Entry, outcome: str, started: float,
                      reason: str, outputs: Sequence[Output]) -> dict[bytes, bytes]:
        now = time.time()
        started = started or now
        return {
            b"agent": self.name.encode(), b"consumer": self.consumer.encode(),
            b"correlation_id": str(message.correlation_id).encode(),
            b"message_id": str(message.message_id).encode(),
            b"causation_id": str(message.causation_id or "").encode(),
            b"message_type": message.message_type.encode(),
            b"from_agent": message.from_agent.encode(), b"to_agent": message.to_agent.encode(),
            b"outcome": outcome.encode(), b"reason": reason.encode(),
            b"delivery_count": str(entry.delivery_count).encode(),
            b"started_ms": str(int(started * 1000)).encode(),
            b"finished_ms": str(int(now * 1000)).encode(),
            b"duration_ms": f"{(now - started) * 1000:.3f}".encode(),
            b"outputs": json.dumps([{"message_id": str(o.message.message_id),
                                     "message_type": o.message.message_type,
                                     "to": o.message.to_agent} for o in outputs]).encode(),
        }

    def _release(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._inflight.pop((entry.stream, entry.entry_id), None)
        self.processed += len(entries)
        self.observer.in_flight(len(self._inflight))
        self._capacity.set()
        if self._stopping.is_set():
            self._handlers_done_when_idle()

    async def _flush_remaining(self) -> None:
        """After the handlers finished: wait until the committer wrote everything."""
        while self._finished or self._dead or self._committing:
            self._finished_event.set()
            await anyio.sleep(0.01)

    # ------------------------------------------------------------------ side loops
    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.lease_every)
            leases: dict[str, list[bytes]] = {}
            for stream, entry_id in list(self._inflight):
                leases.setdefault(stream, []).append(entry_id)
            try:
                await self.bus.renew(leases)
            except Exception as exc:
                self.log.error("lease_renewal_failed", error=repr(exc))

    async def _reclaim_loop(self) -> None:
        idle_ms = int(self.settings.reclaim_idle * 1000)
        while not self._stopping.is_set():
            for stream in self.streams:
                free = self.settings.concurrency - len(self._inflight)
                if free <= 0 or self._stopping.is_set():
                    break
                try:
                    entries, deleted = await self.bus.reclaim(stream, idle_ms, free)
                except Exception as exc:
                    self.log.error("reclaim_failed", stream=stream, error=repr(exc))
                    continue
                if entries or deleted:
                    self.log.info("entries_reclaimed", stream=stream, count=len(entries),
                                  deleted_while_pending=deleted)
                    self.observer.reclaimed(stream, len(entries), deleted)
                if entries:
                    await self._dispatch(entries)
            await anyio.sleep(self.settings.reclaim_interval)

    def _wake_delay_loop(self) -> None:
        self._delay_wakeup.set()

    async def _delay_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = [(k, v) for k, v in self._delayed.items() if v[0] <= now]
            for key, _ in due:
                del self._delayed[key]
            await self._redeliver([v[1:] for _, v in due])
            wait = min((v[0] for v in self._delayed.values()), default=now + 3600) - now
            with anyio.move_on_after(max(wait, 0.0)):
                await self._delay_wakeup.wait()
            self._delay_wakeup = anyio.Event()

    async def _redeliver(self, due: list[tuple[Entry, bool]]) -> None:
        if not due:
            return
        by_stream: dict[str, list[Entry]] = {}
        for entry, counted in due:
            self._inflight.pop((entry.stream, entry.entry_id), None)
            if counted:
                by_stream.setdefault(entry.stream, []).append(entry)
        fresh = [entry for entry, counted in due if not counted]
        for stream, entries in by_stream.items():
            try:
                fresh += await self.bus.redeliver(stream, [e.entry_id for e in entries])
            except Exception as exc:  # left pending: reclaim finds them after reclaim_idle
                self.log.error("redelivery_failed", stream=stream, error=repr(exc))
        if fresh:
            await self._dispatch(fresh)

    async def _heartbeat_loop(self) -> None:
        key = self.keys.heartbeat(self.name, self.consumer)
        ttl = max(int(self.settings.heartbeat_interval * 3), 2)
        while True:
            beat = {"agent": self.name, "consumer": self.consumer, "pid": os.getpid(),
                    "host": socket.gethostname(), "started_at": self.started_at,
                    "at": time.time(), "in_flight": len(self._inflight),
                    "processed": self.processed, "stopping": self._stopping.is_set()}
            try:
                await self.redis.set(key, json.dumps(beat), ex=ttl)
            except Exception as exc:
                self.log.error("heartbeat_failed", error=repr(exc))
            await anyio.sleep(self.settings.heartbeat_interval)

    async def _trim_loop(self) -> None:
        retention_ms = int(self.settings.retention * 1000)
        while not self._stopping.is_set():
            for stream in self.streams:
                try:
                    await self.bus.safe_trim(stream, retention_ms)
                except Exception as exc:
                    self.log.error("trim_failed", stream=stream, error=repr(exc))
            await anyio.sleep(self.settings.trim_interval)

    async def _hand_back(self) -> None:
        """Make entries this worker still holds reclaimable at once by other workers."""
        if not self._inflight:
            return
        try:
            await self.bus.hand_back(self._inflight_by_stream(),
                                     idle_ms=int(self.settings.reclaim_idle * 1000))
            self.log.info("in_flight_handed_back", count=len(self._inflight))
        except Exception as exc:
            self.log.error("hand_back_failed", error=repr(exc))

    def _inflight_by_stream(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for stream, entry_id in self._inflight:
            out.setdefault(stream, []).append(entry_id)
        return out


def _chain(middleware: Sequence[Middleware], handler: Handler) -> Handler:
    call = handler
    for layer in reversed(middleware):
        call = _bind(layer, call)
    return call


def _bind(layer: Middleware, call_next: Handler) -> Handler:
    async def call(ctx: MessageContext) -> None:
        await layer.handle(ctx, call_next)
    return call
