"""One agent type's consume loop in one process (asyncio).

Per entry read, one :class:`Delivery` (delivery.py) in one map, keyed by (stream, entry id):
XREADGROUP (batched, BLOCK) -> decode -> de-duplicate (in memory, then the done marks: a full
batch's two SMISMEMBER pipelined with the next, non-blocking, XREADGROUP; a partial batch's,
and on Cluster every batch's, a round trip of their own) -> ``fate_of`` (fate.py) before
handling -> the handler pool (runners.py: bounded concurrency, middleware chain, timeout
watchdog) -> ``fate_of`` of what the handler raised: ack, retry later (retries.py) or
dead-letter (dead_letters.py) -> the committer writes the outputs, done ids, traces, dead
letters, failure replies and XACKs of every finished Delivery in one round trip. Side loops
renew the leases of the map, reclaim entries of dead consumers (reclaim.py), trim the inboxes
and beat the heartbeat. On stop: no more reads, handlers get ``drain_timeout``, what still runs
is cancelled and handed back, the committer flushes.
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
from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.errors import DecodeError, Reject
from agent_runtime.observability.logging import CURRENT_MESSAGE
from agent_runtime.observability.redaction import env_redactor
from agent_runtime.policies.clock import RedisClock
from agent_runtime.transport.connect import unavailable
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.transport.streams import Entry, Unwritable
from agent_runtime.worker.dead_letters import DeadLetters
from agent_runtime.worker.delivery import (
    Delivery,
    HandlerFailed,
    Middleware,
    Tracer,
    build_commit,
    chain,
    commit_until_done,
    decoded,
)
from agent_runtime.worker.fate import (
    HANDLE,
    Fate,
    Rules,
    before_handling,
    epoch_seconds,
    fate_of,
)
from agent_runtime.worker.housekeeping import Housekeeping, by_stream
from agent_runtime.worker.observer import Observer
from agent_runtime.worker.reclaim import Reclaimer
from agent_runtime.worker.retries import RetryScheduler
from agent_runtime.worker.runners import HandlerPool
from agent_runtime.worker.schedule import ScheduleSweep
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
        self.codec = codec or pipeline.codec(agent)  # signed unless the config says signing: off
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
        self.dead_letters = DeadLetters(agent, self.keys, self.codec, self.redactor, self.log)
        self.clock = RedisClock(self.transport.clock)  # expiry on the server's clock: skew-proof
        self.runtime = (services or Services()).runtime(
            agent,
            self.keys,
            pipeline.routing,
            self.transport.state,
            self.log,
            self.transport.llm_store,
            schedule=self.transport.schedule,
            clock=self.clock,
        )
        self.instance: Agent[Any] = self.agent_type.cls(self.agent_type.config, self.runtime)
        self._chain = chain(middleware, self.instance.handle)  # built once per worker
        self._routing = pipeline.routing
        # Entries read, not yet committed or waiting for a retry: leases, capacity in use.
        self._deliveries: dict[tuple[str, bytes], Delivery] = {}
        self._claims: set[str] = set()  # message ids held by a delivery of the map (dedup)
        self._finished: list[Delivery] = []  # the commit queue (dead letters included)
        self._pool: HandlerPool[Delivery] = HandlerPool(
            self._handle, self.settings.concurrency, self.settings.handler_timeout
        )
        self._dispatching: set[asyncio.Task[None]] = set()
        self.rules = Rules.of(agent, self.settings, self.agent_type.cls.permanent_errors)
        self._clock_offset = 0.0  # the server's clock minus ours, measured per batch
        self._committing = False
        self._finished_event = asyncio.Event()
        self._capacity = asyncio.Event()
        self._stopping = asyncio.Event()
        self.processed = 0
        self._read_backoff = Backoff(0.1, 5.0)
        self.chores = Housekeeping(self.bus, self.settings, self.log, self.transport.heartbeats)
        self.retries = RetryScheduler(self.bus, self.log)
        free = lambda: self.settings.concurrency - len(self._deliveries)  # noqa: E731
        keys = self._deliveries.keys()
        self.reclaimer = Reclaimer(
            self.bus, self.settings, self.streams, keys, free, self.observer, self.log
        )
        self._heartbeat_key = self.keys.heartbeat(agent, consumer)

    def _forget(self, entry: Entry) -> None:
        self._deliveries.pop((entry.stream, entry.entry_id), None)

    def _leases(self) -> dict[str, list[bytes]]:
        return by_stream(self._deliveries)

    def _status(self) -> dict[str, Any]:
        return {
            "agent": self.name,
            "consumer": self.consumer,
            "in_flight": len(self._deliveries),
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
                side.start_soon(self.chores.consumer_loop, self.streams, self._stopping)
                side.start_soon(DeadlineSweep.for_worker(self).run, self._stopping)
                side.start_soon(ScheduleSweep.for_worker(self).run, self._stopping)
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
        """Read batches while there is capacity. While full batches come back (a backlog), a
        batch's de-duplication check rides on the next read, a non-blocking one
        (:meth:`_read_folded`: one round trip checks a batch and reads the next). A partial
        batch means the inbox is drained: its check is a round trip of its own, overlapping
        the next, blocking, read -- as on Cluster (``bus.folds_check`` false) always. That
        check runs in this loop, before the next read, not in a task of its own: a task per
        small batch (create, first step, done callback) cost more CPU than the round trip's
        overlap with the next read saved; entries that arrive meanwhile join the next batch
        (issue 17, docs/benchmarks.md "low-rate CPU per message")."""
        settings = self.settings
        # Read only when at least half a batch fits: keeps batches large under load.
        threshold = max(1, min(settings.batch_size, settings.concurrency) // 2)
        folded = self.bus.folds_check
        unchecked: list[Delivery] = []  # a full batch: its check rides on the next read
        follow = False  # the last read was full, but nothing of it needs a check: read on
        while not self._stopping.is_set():
            free = settings.concurrency - len(self._deliveries)
            if free < threshold and not unchecked:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            count = min(free, settings.batch_size) if free >= threshold else 0
            if unchecked or follow:
                entries = await self._read_folded(unchecked, count)
            else:
                try:
                    entries = await self.bus.read_new(self.streams, count, settings.block_ms)
                except Exception as exc:  # NOGROUP after a server restart, a lost connection
                    await self._recover_read(exc)
                    continue
                self._read_backoff.reset()
            fresh = self._register(entries)
            full = folded and count > 0 and len(entries) >= count
            unchecked, follow = (fresh, not fresh) if full else ([], False)
            if not full and fresh:  # checked here, then read on: no task per batch
                await self._dispatch_guarded(fresh)

    async def _read_folded(self, unchecked: list[Delivery], count: int) -> list[Entry]:
        """One round trip (transport/streams.py ``read_checked``): the done check of
        ``unchecked``, which is then dispatched, and a non-blocking read of up to ``count``
        new entries (returned; checked by the next call if it is a full batch). So a stage
        with a backlog makes 2 round trips per batch (this, and the commit), where it made 3
        (read, check, commit); at a low rate (partial batches) it still makes 3. On a failure
        the unchecked batch falls back to its own check (which leaves it pending if Redis
        is down)."""
        ids = [decoded(d).id_text for d in unchecked]
        try:
            entries, done = await self.bus.read_checked(self.streams, count, ids)
        except Exception as exc:
            self._spawn_dispatch(unchecked)
            await self._recover_read(exc)
            return []
        self._read_backoff.reset()
        if unchecked:
            await self._dispatch_guarded(unchecked, done)
        return entries

    def _spawn_dispatch(self, batch: list[Delivery]) -> None:
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._dispatch_guarded(batch))
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

    def _register(self, entries: list[Entry]) -> list[Delivery]:
        """Synchronous intake of a batch: one Delivery per entry in the map (capacity),
        decoded; dead-letter what does not decode, and ack at once a copy of a message whose
        delivery here holds its id (until that delivery's commit)."""
        fresh: list[Delivery] = []
        deliveries, claims, decode = self._deliveries, self._claims, self.codec.decode
        for entry in entries:
            key = (entry.stream, entry.entry_id)
            if key in deliveries:
                continue  # reclaimed our own live entry: it is already being handled
            try:
                message, payload = decode(entry.fields, entry.stream)
            except DecodeError as exc:
                delivery = deliveries[key] = Delivery(entry)
                if isinstance(exc.message, AgentMessage):
                    delivery.message = exc.message  # its requester is told
                self._dead_letter(delivery, fate_of(exc, entry.delivery_count, self.rules))
                continue
            except Exception as exc:  # a decoder bug must not stop intake: the entry is dead
                delivery = deliveries[key] = Delivery(entry)
                bug = DecodeError("undecodable", f"decoder failed: {exc!r}")
                self._dead_letter(delivery, fate_of(bug, entry.delivery_count, self.rules))
                continue
            id_text = message.id_text
            if id_text in claims:
                delivery = deliveries[key] = Delivery(entry, message, payload)
                self.observer.duplicate_dropped(entry)
                self._finish(delivery, "duplicate")
                continue
            claims.add(id_text)
            delivery = deliveries[key] = Delivery(entry, message, payload, True)  # claimed
            fresh.append(delivery)
        return fresh

    async def _dispatch_guarded(
        self, batch: list[Delivery], done: list[bool] | None = None
    ) -> None:
        try:
            await self._dispatch_registered(batch, done)
        except Exception as exc:  # Redis unreachable: leave them pending, reclaim finds them
            self.log.error("dispatch_failed", error=repr(exc), count=len(batch))
            for delivery in batch:
                self._deliveries.pop(delivery.key, None)
                self._unclaim(delivery)
            self._capacity.set()

    async def _dispatch_registered(
        self, batch: list[Delivery], done: list[bool] | None = None
    ) -> None:
        """Drop what is already done (``done``: the done marks, checked with the next read;
        None: checked here, one round trip), dead-letter what the fate function refuses before
        handling, hand the rest to the handler pool."""
        messages = [decoded(d) for d in batch]
        if done is None:
            done = await self.bus.already_done([m.id_text for m in messages])
        now = await self.clock.now()  # cached: one TIME per second at most
        self._clock_offset = now - time.time()  # outputs are stamped on the server's clock
        for delivery, message, is_done in zip(batch, messages, done, strict=True):
            if is_done:
                self.observer.duplicate_dropped(delivery.entry)
                self._unclaim(delivery)
                self._finish(delivery, "duplicate")
                continue
            deadline = message.deadline
            fate = before_handling(  # fate_of(None, ...): the checks before handling
                delivery.entry.delivery_count,
                self.rules,
                None if deadline is None else epoch_seconds(deadline) - now,
                message.hops,
                message.to_agent,
                now - epoch_seconds(message.timestamp),
            )
            if fate is HANDLE:
                self._pool.submit(delivery)
            else:
                self._dead_letter(delivery, fate)
        self.observer.in_flight(len(self._deliveries))

    async def _handle(self, delivery: Delivery) -> None:
        entry = delivery.entry
        ctx = delivery.ctx = MessageContext(
            agent=self.name,
            message=delivery.message,  # type: ignore[arg-type]  # every handled one decoded
            payload=delivery.payload,  # type: ignore[arg-type]  # decoded with the message
            stream=entry.stream,
            entry_id=entry.entry_id,
            delivery_count=entry.delivery_count,
            routing=self._routing,
            log=self.log,
            clock_offset=self._clock_offset,
        )
        CURRENT_MESSAGE.set((ctx, self.consumer))  # set_current_message: ids on every log line
        started = time.perf_counter()
        delivery.started = time.time()
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
        except Exception as exc:  # the last-resort handler: one message never kills the loop
            self._failed(delivery, ctx, exc, time.perf_counter() - started)
        else:
            self.observer.handled(ctx, time.perf_counter() - started)
            self._finish(delivery, "handled")

    def _failed(self, delivery: Delivery, ctx: MessageContext, exc: Exception, took: float) -> None:
        """Carry out the fate (agent_runtime/worker/fate.py) of a handler that raised ``exc``
        (unwrapping the handler policy's report, :class:`HandlerFailed`)."""
        error: Exception | None = exc
        failed = left = None
        if isinstance(exc, HandlerFailed):
            error, failed, left = exc.error, exc.failed, exc.left
        fate = fate_of(error, delivery.entry.delivery_count, self.rules, left=left, failed=failed)
        if fate.action == "ack":  # Skip: acked without outputs
            ctx.clear_outputs()
            self._finish(delivery, "skipped")
            return
        if fate.action == "dead":
            if fate.reason not in ("rejected", "expired"):
                self.observer.failed(ctx, error or exc, took)
            ctx.log.warning("message_failed_finally", error=fate.error, reason=fate.reason)
            self._dead_letter(delivery, fate)
            return
        if fate.counted:
            self.observer.failed(ctx, error or exc, took)
        else:
            self.observer.retried(ctx, fate.error)
        ctx.log.info("message_retry_scheduled", error=fate.error, delay=fate.delay)
        self._unclaim(delivery)  # a copy read meanwhile is handled; the done set dedups later
        self.retries.schedule(delivery.entry, fate.delay, counted=fate.counted, jitter=fate.jitter)

    # ------------------------------------------------------------------ committing
    def _finish(self, delivery: Delivery, outcome: str) -> None:
        delivery.outcome = outcome
        self._finished.append(delivery)
        self._finished_event.set()

    def _dead_letter(self, delivery: Delivery, fate: Fate) -> None:
        """Queue ``delivery`` as dead: its dead letter, and -- when its envelope was read -- a
        trace record and its requester's ``request.failed`` reply, in the same commit."""
        message = delivery.message
        delivery.letter = self.dead_letters.make(delivery.entry, fate, message)
        kind = None if message is None else message.message_type
        self.observer.dead_lettered(delivery.entry, fate.reason, kind)
        self._finish(delivery, "dead_lettered")

    def _unclaim(self, delivery: Delivery) -> None:
        if delivery.claimed and delivery.message is not None:
            self._claims.discard(delivery.message.id_text)
            delivery.claimed = False

    async def _commit_loop(self) -> None:
        # The event is set whenever _finished is non-empty: clearing it and taking the list
        # happen with no await in between, so appending to an empty _finished keeps that true.
        while True:
            await self._finished_event.wait()
            self._finished_event.clear()
            finished, self._finished = self._finished, []
            commit = build_commit(
                finished,
                codec=self.codec,
                keys=self.keys,
                tracer=self.tracer,
                trace_ttl=self.settings.trace_ttl,
            )
            self._committing = True
            started = time.perf_counter()
            refused = await commit_until_done(self.bus, commit, len(finished), self.log)
            self._committing = False
            self.observer.committed(len(finished), time.perf_counter() - started)
            kept = self._refuse(refused, finished)
            self._release(finished, kept)

    def _refuse(self, refused: list[Unwritable], finished: list[Delivery]) -> set[int]:
        """Inputs whose outputs the server refused for a reason of their own (an output key of
        another type): each is dead-lettered alone, in the next commit, and stays in the map
        (its id claimed) until then. Returns the ``id()`` of their entries."""
        kept: set[int] = set()
        for item in refused:
            entry = item.handled.entry
            delivery = next((d for d in finished if d.entry is entry), None) or Delivery(entry)
            reject = Reject(item.error, code="unwritable_output")
            self._dead_letter(delivery, fate_of(reject, entry.delivery_count, self.rules))
            kept.add(id(entry))
        return kept

    def _release(self, finished: list[Delivery], kept: set[int]) -> None:
        """Drop committed deliveries from the map (freeing capacity) and release their message
        ids. Ids are released only once their done mark is written, so a copy read in between
        is recognised as a duplicate either here (in memory) or by the done set."""
        for delivery in finished:
            entry = delivery.entry
            if id(entry) in kept:
                continue
            self._deliveries.pop((entry.stream, entry.entry_id), None)
            self._unclaim(delivery)
        self.processed += len(finished) - len(kept)
        self.observer.in_flight(len(self._deliveries))
        self._capacity.set()

    async def _flush_remaining(self) -> None:
        """After the handlers finished: wait until the committer wrote everything."""
        while self._finished or self._committing:
            self._finished_event.set()
            await anyio.sleep(0.01)
