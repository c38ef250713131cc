"""The two shared readers of a gateway process.

* :class:`TraceFollower`: every SSE client following a request subscribes here; one task
  reads the trace lists of all followed requests with one pipelined ``LRANGE`` round trip per
  poll (from the lowest index any of its subscribers still needs) and hands each subscriber
  the records it has not seen. A thousand followers cost one round trip per poll interval.
* :class:`FleetFeed`: the WebSocket ``/v1/events`` broadcast; one task (while anyone listens)
  follows the entry agent's inbox, the reports stream and every dead-letter stream with one
  blocking ``XREAD``, and diffs worker heartbeats and breaker states every few seconds.

Replies are not read here: the client's :class:`~agent_runtime.transport.replies.ReplyReader`
(one per process) waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from agent_runtime.observability import inspect
from agent_runtime.transport.gateway import Entry, GatewayStore

if TYPE_CHECKING:
    from agent_runtime.gateway.runtime import GatewayRuntime

_log = structlog.get_logger("agent_runtime.gateway")
#: Records a subscriber may have queued before it is cut off (a client that does not read).
QUEUE_CAP = 1_000
FEED_BLOCK_MS = 1_000
FEED_POLL = 2.0  # seconds between heartbeat/breaker diffs
FEED_QUEUE = 1_000


class Subscription:
    """One follower of one request's trace: the next record index it needs, and its queue of
    ``(index, record)`` pairs (``None`` once it was cut off for not reading)."""

    def __init__(self, cid: str, start: int) -> None:
        self.cid = cid
        self.next = start
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()


class TraceFollower:
    """Every ``interval`` seconds one pipelined read of every followed trace; in between, reads
    of just the traces asked for (a new follower's backlog, a stream that ends)."""

    def __init__(self, store: GatewayStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.subs: dict[str, set[Subscription]] = {}
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.next_round: list[asyncio.Future[None]] = []
        self.urgent: set[str] = set()

    def subscribe(self, cid: str, start: int) -> Subscription:
        sub = Subscription(cid, start)
        self.subs.setdefault(cid, set()).add(sub)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        self.urgent.add(cid)  # read the newcomer's backlog now
        self.wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.cid)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.cid]

    def following(self) -> int:
        return sum(len(s) for s in self.subs.values())

    async def caught_up(self, cid: str) -> None:
        """Return once a read of ``cid``'s trace that started after this call has delivered
        its records (its reply arrived: its last hops are in the trace). Streams that end
        together share that one round trip."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.next_round.append(future)
        self.urgent.add(cid)
        self.wake.set()
        await future

    async def run(self) -> None:
        last_full = -self.interval
        while self.subs:
            round_, self.next_round = self.next_round, []
            urgent, self.urgent = self.urgent, set()
            now = time.monotonic()
            full = now - last_full >= self.interval
            if full:
                last_full = now
            try:
                await self.poll(list(self.subs) if full else [c for c in urgent if c in self.subs])
            except Exception as exc:  # Redis away: keep the followers, try again
                _log.warning("trace_follow_failed", error=repr(exc)[:300])
            for future in round_:
                if not future.done():
                    future.set_result(None)
            if self.next_round or self.urgent:
                continue  # asked for meanwhile: read again at once
            self.wake.clear()
            with anyio.move_on_after(max(0.0, last_full + self.interval - time.monotonic())):
                await self.wake.wait()

    async def poll(self, cids: list[str]) -> None:
        wanted = [(cid, min(s.next for s in self.subs[cid])) for cid in cids if self.subs.get(cid)]
        results = await self.store.trace_records(wanted)
        for (cid, start), records in zip(wanted, results, strict=True):
            for sub in list(self.subs.get(cid, ())):
                self.deliver(sub, start, records)

    def deliver(self, sub: Subscription, start: int, records: list[bytes]) -> None:
        for index, record in enumerate(records, start):
            if index < sub.next:
                continue
            if sub.queue.qsize() >= QUEUE_CAP:
                sub.queue.put_nowait(None)
                self.unsubscribe(sub)
                return
            sub.queue.put_nowait((index, record))
            sub.next = index + 1

    async def aclose(self) -> None:
        self.subs.clear()
        for future in self.next_round:
            future.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class FleetFeed:
    """Fleet events for the WebSocket clients (see the module docstring)."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.task: asyncio.Task[None] | None = None

    def listen(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FEED_QUEUE)
        self.listeners.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        return queue

    def leave(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.listeners.discard(queue)

    def emit(self, event: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            if queue.full():  # a listener that does not read loses events, never blocks others
                continue
            queue.put_nowait(event)

    def streams(self) -> list[str]:
        rt = self.runtime
        names = [rt.keys.reports()] + [rt.keys.dlq(agent) for agent in rt.pipeline.agents]
        if rt.entry_agent:
            names += rt.pipeline.routing.inboxes(rt.entry_agent)
        return names

    async def run(self) -> None:
        positions: dict[str, str] = {}
        workers: set[tuple[str, str]] | None = None
        breakers: dict[str, str] | None = None
        polled = 0.0
        while self.listeners:
            try:
                if not positions:
                    positions = {s: await self.runtime.store.last_id(s) for s in self.streams()}
                if time.monotonic() - polled >= FEED_POLL:
                    polled = time.monotonic()
                    workers = await self.diff_workers(workers)
                    breakers = await self.diff_breakers(breakers)
                found = await self.runtime.store.read_new(positions, FEED_BLOCK_MS, 100)
                for stream, entries in found:
                    for entry in entries:
                        positions[stream] = entry[0]
                        self.emit_entry(stream, entry)
            except Exception as exc:  # Redis away: keep listening, try again
                _log.warning("fleet_feed_failed", error=repr(exc)[:300])
                await anyio.sleep(1.0)

    def emit_entry(self, stream: str, entry: Entry) -> None:
        rt = self.runtime
        entry_id, fields = entry
        if stream.startswith(rt.keys.dlq("")):
            self.emit(
                {
                    "type": "dead_letter",
                    "id": entry_id,
                    "agent": inspect.dlq_agent(rt.keys, stream),
                    "reason": inspect.text(fields.get(b"reason")),
                    "correlation_id": inspect.text(fields.get(b"correlation_id")) or None,
                }
            )
            return
        try:
            decoded = rt.client.codec.decode(fields, stream)
        except Exception:
            return
        cid = str(decoded.message.correlation_id)
        if stream == rt.keys.reports():
            data = decoded.payload.model_dump(mode="json")
            ok = getattr(decoded.payload, "ok", True)
            state = "succeeded" if ok else str(data.get("status") or "failed")
            self.emit({"type": "request.finished", "correlation_id": cid, "state": state})
        elif decoded.message.message_type == "user.request":
            self.emit(
                {
                    "type": "request.started",
                    "correlation_id": cid,
                    "message_type": decoded.message.message_type,
                }
            )

    async def diff_workers(self, before: set[tuple[str, str]] | None) -> set[tuple[str, str]]:
        beats = await inspect.heartbeats(self.runtime.reader, self.runtime.keys)
        now = {(str(b.get("agent")), str(b.get("consumer"))) for b in beats}
        if before is not None:
            for agent, consumer in sorted(now - before):
                self.emit({"type": "worker.up", "agent": agent, "consumer": consumer})
            for agent, consumer in sorted(before - now):
                self.emit({"type": "worker.down", "agent": agent, "consumer": consumer})
        return now

    async def diff_breakers(self, before: dict[str, str] | None) -> dict[str, str]:
        found = await inspect.breakers(self.runtime.reader, self.runtime.keys)
        now = {name: fields.get("state", "closed") for name, fields in found.items()}
        if before is not None:
            for name, state in sorted(now.items()):
                old = before.get(name, "closed")
                if state != old and state in ("open", "closed"):
                    kind = "breaker.opened" if state == "open" else "breaker.closed"
                    self.emit({"type": kind, "name": name, "state": state})
        return now

    async def aclose(self) -> None:
        self.listeners.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


def event_json(event: dict[str, Any]) -> str:
    return json.dumps({**event, "at": time.time()}, ensure_ascii=False)
