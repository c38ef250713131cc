"""One agent type's consume loop in one process (asyncio).

Flow: XREADGROUP (batched, BLOCK) -> decode -> de-duplicate (one pipelined SMISMEMBER per
batch) -> the handler pool (runners.py: long-lived runner tasks, bounded concurrency,
middleware chain, timeout watchdog) -> the committer writes outputs + done ids + traces +
dead letters + XACKs of everything finished since its last round trip. Side loops renew
leases of in-flight entries, reclaim entries of dead consumers and own orphans (reclaim.py),
redeliver failed entries after backoff, trim the inboxes and beat the heartbeat; each survives
connection errors with a jittered backoff (backoff.py). On stop: no more reads, in-flight
handlers get ``drain_timeout``, what still runs is cancelled and handed back (made reclaimable
at once), the committer flushes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from agent_runtime.agent import Agent, MessageContext, Services
from agent_runtime.backoff import Backoff, pause, until_done
from agent_runtime.codec import Codec, Decoded
from agent_runtime.config.model import signing_key
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.errors import DecodeError, Skip
from agent_runtime.observability.logging import set_current_message
from agent_runtime.observability.redaction import env_redactor
from agent_runtime.policies.clock import RedisClock
from agent_runtime.transport.connect import unavailable
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.transport.streams import DeadLetter, Entry, Unwritable
from agent_runtime.worker.dead_letters import DeadLetters
from agent_runtime.worker.delivery import (
    Finished,
    Middleware,
    Tracer,
    build_commit,
    chain,
    undeliverable,
)
from agent_runtime.worker.fate import Fate, fate_of
from agent_runtime.worker.housekeeping import Housekeeping, by_stream
from agent_runtime.worker.observer import Observer
from agent_runtime.worker.reclaim import Reclaimer
from agent_runtime.worker.retries import RetryScheduler
from agent_runtime.worker.runners import HandlerPool
from agent_runtime.worker.sweep import DeadlineSweep
from protocols.envelope import AgentMessage

if TYPE_CHECKING:  # TestPipeline's in-process transport
    from agent_runtime.transport.memory import MemoryTransport

__all__ = ["Middleware", "Worker", "default_consumer_name"]


def default_consumer_name(agent: str, slot: int | str = 0) -> str:
    """Stable per host and slot, so a restarted worker re-reads its own pending entries."""
    return f"{agent}-{socket.gethostname()}-{slot}"


class Worker:
    """Consumes one agent type's inbox(es). Construct, then ``await run()`` (asyncio)."""

    def __init__(
        self,
        pipeline: Pipeline,
        agent: str,
        redis: Any,
        *,
        consumer: str,
        cluster: bool = False,
        codec: Codec | None = None,
        middleware: Sequence[Middleware] = (),
        observer: Observer | None = None,
        services: Services | None = None,
        transport: RedisTransport | MemoryTransport | None = None,  # default: Redis on `redis`
    ) -> None:
        self.pipeline = pipeline
        self.agent_type = pipeline.agents[agent]
        self.name = agent
        self.settings: WorkerSettings = pipeline.worker_settings(agent)
        self.keys = pipeline.config.keys
        self.redis = redis
        self.consumer = consumer
        self.codec = codec or Codec(
            pipeline.schemas,
            signing_key=signing_key(),  # like the Client: signed whenever a key exists
            max_bytes=self.settings.max_message_bytes,
            keys=self.keys,
            reply_streams=pipeline.config.reply_streams,
        )
        self.transport = transport or RedisTransport.of(redis, cluster=cluster, keys=self.keys)
        self.bus = self.transport.bus(
            group=self.keys.group(agent),
            consumer=consumer,
            done_key=lambda day: self.keys.done(agent, day),
            done_ttl=self.settings.done_ttl,
            dlq_maxlen=self.settings.dlq_maxlen,
            mark_prefix=self.keys.commit_mark(consumer, ""),
        )
        self.streams = pipeline.routing.inboxes(agent)
        self.observer = observer or Observer()
        self.redactor = env_redactor().with_config(pipeline.config)  # for dead-letter text
        self.tracer = Tracer(agent, consumer) if self.settings.trace else None
        self.log = structlog.get_logger("agent_runtime.worker").bind(agent=agent, consumer=consumer)
        self.dead_letters = DeadLetters(
            agent, self.keys, self.codec, self.redactor, self.tracer, self.log
        )
        self.runtime = (services or Services()).runtime(
            agent,
            self.keys,
            pipeline.routing,
            self.transport.state,
            self.log,
            self.transport.llm_store,
        )
        self.instance: Agent[Any] = self.agent_type.cls(self.agent_type.config, self.runtime)
        self._chain = chain(middleware, self.instance.handle)
        self._inflight: dict[tuple[str, bytes], Entry] = {}  # read, not yet acked
        self._handling: set[str] = set()  # ids (text) of messages with a handler running
        self._pool: HandlerPool[tuple[Entry, Decoded]] = HandlerPool(
            self._handle, self.settings.concurrency, self.settings.handler_timeout
        )
        self._dispatching: set[asyncio.Task[None]] = set()
        self._finished: list[Finished] = []
        self._dead: list[DeadLetter] = []
        self._dead_traces: list[tuple[str, bytes]] = []
        self._permanent = tuple(self.agent_type.cls.permanent_errors)
        self.clock = RedisClock(self.transport.clock)  # expiry on the server's clock: skew-proof
        self._committing = False
        self._finished_event = asyncio.Event()
        self._capacity = asyncio.Event()
        self._stopping = asyncio.Event()
        self.processed = 0
        self._read_backoff = Backoff(0.1, 5.0)
        self.chores = Housekeeping(self.bus, self.settings, self.log, self.transport.heartbeats)
        self.retries = RetryScheduler(self.bus, self.log)
        free = lambda: self.settings.concurrency - len(self._inflight)  # noqa: E731
        keys = self._inflight.keys()
        self.reclaimer = Reclaimer(
            self.bus, self.settings, self.streams, keys, free, self.observer, self.log
        )
        self._heartbeat_key = self.keys.heartbeat(agent, consumer)

    def _forget(self, entry: Entry) -> None:
        self._inflight.pop((entry.stream, entry.entry_id), None)

    def _leases(self) -> dict[str, list[bytes]]:
        return by_stream(self._inflight)

    def _status(self) -> dict[str, Any]:
        return {
            "agent": self.name,
            "consumer": self.consumer,
            "in_flight": len(self._inflight),
            "processed": self.processed,
            "stopping": self._stopping.is_set(),
        }

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the worker to drain and stop (call from the worker's event loop)."""
        self._stopping.set()
        self._capacity.set()
        self.retries.wake()

    async def run(self) -> None:
        if not await self._until_done("start", self._prepare):
            return  # stopped while the server was unreachable
        await self.instance.start()
        self.log.info(
            "worker_started",
            streams=self.streams,
            pid=os.getpid(),
            concurrency=self.settings.concurrency,
        )
        try:
            async with anyio.create_task_group() as side:
                side.start_soon(self._commit_loop)
                side.start_soon(self.chores.lease_loop, self._leases)
                side.start_soon(self.chores.heartbeat_loop, self._heartbeat_key, self._status)
                side.start_soon(self.chores.watchdog, self._pool.running, self._pool.timed_out)
                await self._recover_own_pending()
                side.start_soon(self.reclaimer.run, self._dispatch, self._stopping)
                side.start_soon(self.retries.run, self._dispatch, self._forget, self._stopping)
                side.start_soon(self.chores.trim_loop, self.streams, self._stopping)
                side.start_soon(DeadlineSweep.for_worker(self).run, self._stopping)
                await self._read_loop()
                await self._drain()
                await self._flush_remaining()
                side.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._cancel_handlers()
                await self._pool.close()
                await self.chores.hand_back(self._leases())
                await self.instance.stop()
                await self._delete_heartbeat()
        self.log.info("worker_stopped", processed=self.processed)

    async def _prepare(self) -> None:
        await self.bus.check_server()
        for stream in self.streams:
            await self.bus.ensure_group(stream)

    async def _until_done(self, step: str, action: Callable[[], Awaitable[None]]) -> bool:
        """``action``, retried with backoff while the server is unavailable (backoff.py)."""
        return await until_done(action, unavailable, self._stopping, self.log, step)

    async def _delete_heartbeat(self) -> None:
        try:
            await self.transport.heartbeats.forget(self._heartbeat_key)
        except Exception as exc:  # it expires by itself (TTL of three intervals)
            self.log.warning("heartbeat_delete_failed", error=repr(exc))

    async def _drain(self) -> None:
        """Give in-flight handlers ``drain_timeout`` to finish, then cancel the rest."""
        if self._dispatching:
            await asyncio.gather(*self._dispatching, return_exceptions=True)
        if len(self._pool):
            self.log.info(
                "worker_draining", in_flight=len(self._pool), timeout=self.settings.drain_timeout
            )
            with anyio.move_on_after(self.settings.drain_timeout):
                await self._pool.idle.wait()
        await self._cancel_handlers()

    async def _cancel_handlers(self) -> None:
        """Handlers not started yet stay in flight (handed back); running ones are cancelled."""
        self._pool.drop_queued()
        await self._pool.cancel_running()

    # ------------------------------------------------------------------ intake
    async def _read_loop(self) -> None:
        settings = self.settings
        # Read only when at least half a batch fits: keeps batches large under load.
        threshold = max(1, min(settings.batch_size, settings.concurrency) // 2)
        while not self._stopping.is_set():
            free = settings.concurrency - len(self._inflight)
            if free < threshold:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            try:
                entries = await self.bus.read_new(
                    self.streams, min(free, settings.batch_size), settings.block_ms
                )
            except Exception as exc:  # NOGROUP after a server restart, a lost connection
                await self._recover_read(exc)
                continue
            self._read_backoff.reset()
            if entries:
                # The next XREADGROUP overlaps this batch's de-duplication round trip.
                fresh = self._register(entries)
                task = asyncio.get_running_loop().create_task(self._dispatch_guarded(fresh))
                self._dispatching.add(task)
                task.add_done_callback(self._dispatching.discard)

    async def _recover_read(self, exc: Exception) -> None:
        """The server lost our groups (restart without persistence, stream deleted): create
        them again; any other read error: log and back off (jittered, exponential, reset by
        the next successful read), the loop goes on."""
        if "NOGROUP" in str(exc):
            self.log.warning("consumer_group_recreated", error=str(exc))
            try:
                for stream in self.streams:
                    await self.bus.ensure_group(stream)
                return
            except Exception as again:
                exc = again
        delay = self._read_backoff.next_delay()
        self.log.error("read_failed", error=repr(exc), retry_in=round(delay, 3))
        await pause(delay, self._stopping)

    async def _recover_own_pending(self) -> None:
        """Re-read own pending entries (restart under the same name); waits while the server is
        unavailable, leaves them to the reclaim loop's orphan sweep on any other error."""
        for stream in self.streams:
            try:
                await self._until_done("recover_own_pending", partial(self._own, stream))
            except Exception as exc:
                self.log.error("own_pending_recovery_failed", stream=stream, error=repr(exc))

    async def _own(self, stream: str) -> None:
        entries = await self.bus.read_own_pending(stream, 10_000)
        if entries:
            self.log.info("own_pending_recovered", stream=stream, count=len(entries))
            await self._dispatch(entries)

    async def _dispatch(self, entries: list[Entry]) -> None:
        """Register and dispatch entries of the reclaim loop, the own-pending recovery and the
        retry scheduler. Never raises: when Redis fails, the entries are forgotten here and
        stay pending; the reclaim loop's orphan sweep finds them (reclaim.py)."""
        await self._dispatch_guarded(self._register(entries))

    def _register(self, entries: list[Entry]) -> list[tuple[Entry, Decoded]]:
        """Synchronous intake of a batch: count entries as in flight (capacity), decode them,
        dead-letter what does not decode, and ack at once a copy of a message whose handling
        is already under way here (its id stays claimed until the first copy's commit)."""
        decoded: list[tuple[Entry, Decoded]] = []
        inflight, handling = self._inflight, self._handling
        for entry in entries:
            key = (entry.stream, entry.entry_id)
            if key in inflight:
                continue  # reclaimed our own live entry: it is already being handled
            inflight[key] = entry
            try:
                item = self.codec.decode(entry.fields)
            except DecodeError as exc:
                known = exc.message if isinstance(exc.message, AgentMessage) else None
                self._dead_letter(entry, exc.reason, exc.detail, message=known)
                continue
            except Exception as exc:  # a decoder bug must not stop intake: the entry is dead
                self._dead_letter(entry, "undecodable", f"decoder failed: {exc!r}")
                continue
            if item.message.id_text in handling:
                self.observer.duplicate_dropped(entry)
                self._finish(entry, None, outcome="duplicate")
                continue
            handling.add(item.message.id_text)
            decoded.append((entry, item))
        return decoded

    async def _dispatch_guarded(self, batch: list[tuple[Entry, Decoded]]) -> None:
        try:
            await self._dispatch_registered(batch)
        except Exception as exc:  # Redis unreachable: leave them pending, reclaim finds them
            self.log.error("dispatch_failed", error=repr(exc), count=len(batch))
            for entry, item in batch:
                self._inflight.pop((entry.stream, entry.entry_id), None)
                self._handling.discard(item.message.id_text)
            self._capacity.set()

    async def _dispatch_registered(self, batch: list[tuple[Entry, Decoded]]) -> None:
        """Drop what is already done (one round trip), dead-letter the undeliverable, hand
        the rest to the handler pool."""
        done = await self.bus.already_done([d.message.id_text for _, d in batch])
        now = await self.clock.now_datetime() if any(d.message.deadline for _, d in batch) else None
        cap, name, submit = self.settings.max_deliveries, self.name, self._pool.submit
        for job, is_done in zip(batch, done, strict=True):
            entry, item = job
            message = item.message
            if is_done:
                self.observer.duplicate_dropped(entry)
                self._handling.discard(message.id_text)
                self._finish(entry, None, outcome="duplicate")
            elif reason := undeliverable(entry, message, now, name, cap):
                self._dead_letter(entry, *reason, message=message)
            else:
                submit(job)
        self.observer.in_flight(len(self._inflight))

    async def _handle(self, job: tuple[Entry, Decoded]) -> None:
        entry, item = job
        ctx = MessageContext(
            agent=self.name,
            message=item.message,
            payload=item.payload,
            stream=entry.stream,
            entry_id=entry.entry_id,
            delivery_count=entry.delivery_count,
            routing=self.pipeline.routing,
            log=self.log,
        )
        set_current_message(ctx, self.consumer)  # ids on every log line of this task
        started = time.perf_counter()
        wall_started = time.time()
        try:
            try:
                await self._chain(ctx)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task not in self._pool.timed_out:
                    raise
                self._pool.timed_out.discard(task)
                task.uncancel()
                raise TimeoutError(
                    f"handler timed out after {self.settings.handler_timeout}s"
                ) from None
        except Skip:
            ctx.clear_outputs()
            self._finish(entry, ctx, wall_started, "skipped")
        except Exception as exc:  # the last-resort handler: one message never kills the loop
            self._fail(entry, ctx, exc, time.perf_counter() - started)
        else:
            self.observer.handled(ctx, time.perf_counter() - started)
            finished = self._finished
            if not finished:  # the committer is woken by the first of a round (see _commit_loop)
                self._finished_event.set()
            finished.append(Finished(entry, ctx, wall_started, "handled"))

    def _fail(self, entry: Entry, ctx: MessageContext, exc: Exception, took: float) -> None:
        """Carry out the fate (agent_runtime/worker/fate.py) of a handler that raised ``exc``."""
        settings = self.settings
        fate: Fate = fate_of(
            exc,
            entry.delivery_count,
            max_deliveries=settings.max_deliveries,
            retry_backoff=settings.retry_backoff,
            retry_backoff_max=settings.retry_backoff_max,
            permanent=self._permanent,
        )
        if fate.action == "dead":
            if fate.reason not in ("rejected", "expired"):
                self.observer.failed(ctx, exc, took)
            ctx.log.warning("message_failed_finally", error=fate.error, reason=fate.reason)
            self._dead_letter(entry, fate.reason, fate.error, message=ctx.message)
            return
        if fate.counted:
            self.observer.failed(ctx, exc, took)
        else:
            self.observer.retried(ctx, fate.error)
        ctx.log.info("message_retry_scheduled", error=fate.error, delay=fate.delay)
        self._handling.discard(ctx.message.id_text)
        self.retries.schedule(entry, fate.delay, counted=fate.counted)

    # ------------------------------------------------------------------ committing
    def _finish(
        self,
        entry: Entry,
        ctx: MessageContext | None,
        started: float = 0.0,
        outcome: str = "handled",
    ) -> None:
        self._finished.append(Finished(entry, ctx, started, outcome))
        self._finished_event.set()

    def _dead_letter(
        self, entry: Entry, reason: str, error: str, message: AgentMessage | None = None
    ) -> None:
        """Queue ``entry`` for the dead-letter stream; a message whose envelope was read gets a
        trace record and its requester one ``request.failed`` reply, in the same commit."""
        letter, trace = self.dead_letters.make(entry, reason, error, message)
        if trace is not None:
            self._dead_traces.append(trace)
        self.observer.dead_lettered(entry, reason, letter.extra.get("message_type"))
        self._dead.append(letter)
        self._finished_event.set()

    async def _commit_loop(self) -> None:
        # The event is set whenever _finished or _dead is non-empty: clearing it and taking
        # both lists happen with no await in between, so appending to an empty _finished (or
        # to _dead) and setting the event then keeps that true.
        while True:
            await self._finished_event.wait()
            self._finished_event.clear()
            finished, self._finished = self._finished, []
            dead, self._dead = self._dead, []
            traces, self._dead_traces = self._dead_traces, []
            commit = build_commit(
                finished,
                dead,
                traces,
                codec=self.codec,
                keys=self.keys,
                tracer=self.tracer,
                trace_ttl=self.settings.trace_ttl,
            )
            self._committing = True
            started = time.perf_counter()
            refused = await self.chores.commit_until_done(commit, len(finished) + len(dead))
            self._committing = False
            self.observer.committed(len(finished) + len(dead), time.perf_counter() - started)
            self._refuse(refused, finished)
            self._release(finished, dead, refused)

    def _refuse(self, refused: list[Unwritable], finished: list[Finished]) -> None:
        """Inputs whose outputs the server refused for a reason of their own (an output key of
        another type): each is dead-lettered alone, in the next commit."""
        for item in refused:
            ctx = next((f.ctx for f in finished if f.entry is item.handled.entry), None)
            message = None if ctx is None else ctx.message
            self._dead_letter(item.handled.entry, "unwritable_output", item.error, message=message)

    def _release(
        self, finished: list[Finished], dead: list[DeadLetter], refused: list[Unwritable]
    ) -> None:
        """Free the in-flight slots of committed entries and release their message ids. Ids
        are released only once their done mark is written, so a copy read in between is
        recognised as a duplicate either here (in memory) or by the done set. Refused inputs
        stay in flight until their dead letter is committed."""
        inflight, handling = self._inflight, self._handling
        kept = {id(item.handled.entry) for item in refused}
        for item in finished:
            entry = item.entry
            if id(entry) in kept:
                continue
            inflight.pop((entry.stream, entry.entry_id), None)
            if item.ctx is not None:
                handling.discard(item.ctx.message.id_text)
        for letter in dead:
            inflight.pop((letter.entry.stream, letter.entry.entry_id), None)
            if "message_id" in letter.extra:
                handling.discard(letter.extra["message_id"])
        self.processed += len(finished) + len(dead) - len(kept)
        self.observer.in_flight(len(inflight))
        self._capacity.set()

    async def _flush_remaining(self) -> None:
        """After the handlers finished: wait until the committer wrote everything."""
        while self._finished or self._dead or self._committing:
            self._finished_event.set()
            await anyio.sleep(0.01)
