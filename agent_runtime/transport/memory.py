"""The in-memory transport: the worker's stream bus, in one process, without a server.

For tests (the library's and users': :class:`agent_runtime.testing.TestPipeline`), where a
whole pipeline then runs in milliseconds. :class:`MemoryBus` is a drop-in
:class:`~agent_runtime.transport.streams.StreamBus` (same constructor, same methods) whose
commands act on a :class:`~agent_runtime.transport.memory_store.Store` with the semantics of
the real ones, rule by rule, held to the same transport contract suite
(tests/contract/test_transport_contract.py):

* ``read_new``: new entries get delivery count 1 and join this consumer's pending list; with
  ``block_ms`` it waits (an asyncio wait, woken by any write) until an entry arrives.
  ``read_checked`` checks the ids it is given against the done marks, then reads without
  waiting.
* Re-reading the own pending list, ``claim``, ``reclaim`` and ``redeliver`` add 1 to the
  count and reset the idle time; ``renew`` resets it and ``hand_back`` backdates it, neither
  counts. Idle time is the store clock's (a :class:`ManualClock` in tests).
* ``commit`` follows transport/commit.py's atomic script: a replayed token is refused, a copy
  of a message already marked done writes no outputs, a terminal reply is written only if the
  request's outcome guard was free, an input whose output key holds another type is neither
  written nor acked (returned as :class:`Unwritable`), trace records never fail a commit.

:class:`MemoryTransport` bundles one store with the Redis-shaped client
(:mod:`agent_runtime.transport.memory_redis`) the rest of the runtime still talks to (client
publish, clock, heartbeats, deadline sweep, breakers, agent state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from agent_runtime.transport.base import Transport
from agent_runtime.transport.commit import COMMIT_MARK_TTL
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.memory_redis import MemoryRedis
from agent_runtime.transport.memory_store import (
    Group,
    ManualClock,
    NoGroup,
    Store,
    Stream,
    StreamId,
    WrongType,
    format_id,
    parse_id,
)
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.transport.streams import (
    Commit,
    DeadLetter,
    Entry,
    Handled,
    StreamBus,
    Unwritable,
    Write,
    _dead_fields,
)

__all__ = ["ManualClock", "MemoryBus", "MemoryRedis", "MemoryTransport"]


class MemoryTransport:
    """:class:`~agent_runtime.transport.base.Transport` in memory: one store, its clock,
    the Redis-shaped client over it (``redis``), :meth:`bus` for one consumer's stream bus,
    and the typed pieces (``state``, ``clock``, ``heartbeats``, ``llm_store``, ``deadlines``,
    ``publisher``, ``breakers``, ``schedule``,
    ``rate_limits``) -- the Redis transport's own classes on the
    Redis-shaped client, so they keep one implementation and the store answers their commands
    as the server does. ``keys``: the pipeline's key names (prefix)."""

    cluster = False

    def __init__(
        self,
        clock: ManualClock | None = None,
        keys: Keys | None = None,
        *,
        store: Store | None = None,
    ) -> None:
        self.redis = MemoryRedis(store, clock=clock)
        self.store: Store = self.redis.store
        self.keys = keys or Keys()
        pieces = RedisTransport.of(self.redis, keys=self.keys)
        self.state = pieces.state
        self.clock = pieces.clock
        self.heartbeats = pieces.heartbeats
        self.llm_store = pieces.llm_store
        self.deadlines = pieces.deadlines
        self.publisher = pieces.publisher
        self.breakers = pieces.breakers
        self.schedule = pieces.schedule
        self.rate_limits = pieces.rate_limits

    @classmethod
    def on(cls, store: Store, keys: Keys | None = None) -> MemoryTransport:
        """Another transport on ``store`` (a second process's connection, in real life)."""
        return cls(keys=keys, store=store)

    def bus(self, *, group: str, consumer: str, **options: Any) -> MemoryBus:
        """The stream operations of one consumer group, in memory (see :class:`MemoryBus`)."""
        return MemoryBus(self.redis, group=group, consumer=consumer, **options)

    async def aclose(self) -> None:
        """Nothing to close: the store lives as long as its holders."""


def _is_transport(transport: MemoryTransport) -> Transport:
    return transport  # mypy checks here that MemoryTransport is a Transport


class MemoryBus(StreamBus):
    """:class:`StreamBus`'s operations on a :class:`MemoryRedis`'s store (see the module
    docstring for the rules it keeps). ``redis`` must be a :class:`MemoryRedis`."""

    def __init__(self, redis: Any, **options: Any) -> None:
        """``options``: :class:`StreamBus`'s (group, consumer, done_key, ...)."""
        if not isinstance(redis, MemoryRedis):
            raise TypeError("MemoryBus needs a MemoryRedis (agent_runtime.transport.memory)")
        super().__init__(redis, **options)
        self.store: Store = redis.store

    # ---------------------------------------------------------------- groups and reads
    async def check_server(self) -> None:
        """Nothing to check: the store never evicts."""

    async def ensure_group(self, stream: str) -> None:
        """Create the stream (MKSTREAM) and the group at id 0, idempotently."""
        value: Stream = self.store.typed(stream, Stream, create=True)
        value.groups.setdefault(self.group, Group())

    async def read_new(self, streams: Sequence[str], count: int, block_ms: int) -> list[Entry]:
        """New entries of ``streams`` (count 1), at most ``count``; with ``block_ms`` waits
        for a write until one arrives or the time is up (XREADGROUP ... BLOCK)."""
        entries = self._take_new(streams, count)
        if entries or not block_ms:
            return entries
        loop = asyncio.get_running_loop()
        until, interrupts = loop.time() + block_ms / 1000, self.store.interrupts
        while not entries and (left := until - loop.time()) > 0:
            if self.store.interrupts != interrupts:
                break
            await self.store.wait_written(left)
            entries = self._take_new(streams, count)
        return entries

    async def read_checked(
        self, streams: Sequence[str], count: int, message_ids: Sequence[str]
    ) -> tuple[list[Entry], list[bool]]:
        """As :meth:`StreamBus.read_checked`: ``message_ids`` checked against the done marks,
        then new entries without waiting."""
        done = await self.already_done(list(message_ids))
        return (self._take_new(streams, count) if count else []), done

    def _take_new(self, streams: Sequence[str], count: int) -> list[Entry]:
        out: list[Entry] = []
        for name in streams:
            stream, group = self.store.group(name, self.group)
            for sid, fields in stream.after(group.last):
                if len(out) >= count:
                    return out
                group.last = sid
                self.store.deliver(group, self.consumer, sid, 1)
                out.append(Entry(name, format_id(sid), dict(fields)))
        return out

    async def read_own_pending(self, stream: str, count: int) -> list[Entry]:
        """This consumer's pending entries (count + 1); trimmed ones leave the PEL."""
        value, group = self.store.group(stream, self.group)
        own = [sid for sid, p in group.pel.items() if p.consumer == self.consumer]
        return self._claim_full(value, group, stream, sorted(own)[:count])

    def _claim_full(
        self, stream: Stream, group: Group, name: str, sids: list[StreamId]
    ) -> list[Entry]:
        """Claim ``sids`` to this consumer as full entries (count + 1, idle 0)."""
        out = []
        for sid in sids:
            pending = group.pel.get(sid)
            if pending is None:
                continue
            if sid not in stream.entries:  # trimmed while pending: dropped from the PEL
                del group.pel[sid]
                continue
            self.store.deliver(group, self.consumer, sid, pending.count + 1)
            out.append(Entry(name, format_id(sid), dict(stream.entries[sid]), pending.count + 1))
        return out

    def _idle(self, group: Group, min_idle_ms: int) -> list[StreamId]:
        now = self.store.now_ms()
        return sorted(sid for sid, p in group.pel.items() if now - p.delivered_ms >= min_idle_ms)

    async def reclaim(self, stream: str, min_idle_ms: int, limit: int) -> tuple[list[Entry], int]:
        """XAUTOCLAIM: entries idle for ``min_idle_ms`` (any consumer's), up to ``limit``;
        and how many pending ids had been trimmed away (removed from the PEL)."""
        value, group = self.store.group(stream, self.group)
        idle = self._idle(group, min_idle_ms)
        deleted = [sid for sid in idle if sid not in value.entries]
        for sid in deleted:
            del group.pel[sid]
        live = [sid for sid in idle if sid in value.entries][:limit]
        return self._claim_full(value, group, stream, live), len(deleted)

    def _lease(self, leases: dict[str, list[bytes]], idle_ms: int) -> None:
        """XCLAIM ... [IDLE n] JUSTID: own the entries, set their idle time, no count."""
        now = self.store.now_ms()
        for stream, ids in leases.items():
            _value, group = self.store.group(stream, self.group)  # NOGROUP, as XCLAIM
            for raw in ids:
                pending = group.pel.get(parse_id(raw))
                if pending is not None:
                    pending.consumer, pending.delivered_ms = self.consumer, now - idle_ms

    async def renew(self, leases: dict[str, list[bytes]]) -> None:
        """Reset the idle time of in-flight entries (no count)."""
        self._lease(leases, 0)

    async def hand_back(self, leases: dict[str, list[bytes]], idle_ms: int) -> None:
        """Mark entries idle for ``idle_ms`` (no count): the next reclaim takes them."""
        self._lease(leases, idle_ms)

    async def redeliver(self, stream: str, ids: list[bytes]) -> list[Entry]:
        """Claim own entries again as full entries: count + 1."""
        value, group = self.store.group(stream, self.group)
        return self._claim_full(value, group, stream, [parse_id(i) for i in ids])

    async def own_pending(self, stream: str, min_idle_ms: int, count: int) -> list[bytes]:
        """Ids of this consumer's pending entries idle for at least ``min_idle_ms``."""
        _value, group = self.store.group(stream, self.group)
        idle = self._idle(group, min_idle_ms)
        return [format_id(s) for s in idle if group.pel[s].consumer == self.consumer][:count]

    async def claim(self, stream: str, ids: list[bytes], min_idle_ms: int) -> list[Entry]:
        """Claim ``ids`` still idle for ``min_idle_ms`` (count + 1)."""
        value, group = self.store.group(stream, self.group)
        idle = set(self._idle(group, min_idle_ms))
        return self._claim_full(
            value, group, stream, [s for i in ids if (s := parse_id(i)) in idle]
        )

    # ---------------------------------------------------------------- done marks
    def _bucket(self) -> int:
        return int(self.store.clock.now() // self.done_ttl)

    def _done_sets(self) -> list[set[bytes]]:
        sets = (self.store.typed(self.done_key(b), set) for b in self._live_buckets())
        return [s for s in sets if s is not None]

    async def already_done(self, message_ids: list[str]) -> list[bool]:
        sets = self._done_sets()
        return [any(m.encode() in s for s in sets) for m in message_ids]

    async def forget_done(self, message_id: str) -> None:
        for done in self._done_sets():
            done.discard(message_id.encode())

    # ---------------------------------------------------------------- commit
    async def commit(self, commit: Commit) -> list[Unwritable]:
        """Apply ``commit`` as transport/commit.py's atomic script does (module docstring)."""
        store = self.store
        mark = f"{self.mark_prefix}{commit.token}"
        if mark in store.data and store.live(mark) is not None:
            return list(store.refusals.get(mark, []))
        store.data[mark] = b"1"
        store.expires[mark] = store.clock.now() + COMMIT_MARK_TTL
        refused: list[Unwritable] = []
        current = self.done_key(self._live_buckets()[1])
        for item in commit.handled:
            problem = self._commit_handled(item, current)
            if problem:
                refused.append(Unwritable(item, problem))
        for dead in commit.dead:
            self._commit_dead(dead)
        if any(h.message_id for h in commit.handled):
            store.expire(current, 2 * self.done_ttl + 60)
        if refused:  # a replay of this commit reports the same refusals
            store.refusals[mark] = refused
        self._append_traces(commit)
        store.written()
        return refused

    def _commit_handled(self, item: Handled, current: str) -> str | None:
        """One handled input: its outputs (unless a copy already done), done mark, ack; or the
        WRONGTYPE problem that refuses it (nothing written, not acked)."""
        skip = bool(item.message_id) and any(self._done_marked(item.message_id))
        problems = [p for w in item.writes if (p := self._bad_type(w))]
        if problems and not skip:
            return problems[0]
        if not skip:
            for write in item.writes:
                self._write(write, item.message_id)
            if item.message_id:
                self.store.typed(current, set, create=True).add(item.message_id.encode())
        self._ack(item.entry)
        return None

    def _done_marked(self, message_id: str) -> list[bool]:
        return [message_id.encode() in s for s in self._done_sets()]

    def _commit_dead(self, dead: DeadLetter) -> None:
        mid = dead.extra.get("message_id", "")
        writes = [Write(dead.dlq, _dead_fields(dead, self.consumer), maxlen=self.dlq_maxlen)]
        if dead.reply is not None:
            writes.append(dead.reply)
        for write in writes:
            if not self._bad_type(write):
                self._write(write, mid)
        self._ack(dead.entry)

    def _bad_type(self, write: Write) -> str | None:
        for key, want in ((write.stream, "stream"), (write.guard, "string")):
            if key:
                held = self.store.kind(key)
                if held not in ("none", want):
                    return str(WrongType(key, held))
        return None

    def _write(self, write: Write, message_id: str) -> None:
        """XADD (after ``SET guard NX`` when guarded), then EXPIRE the stream if ``ttl``."""
        store = self.store
        if write.guard:
            if store.live(write.guard) is not None:
                return  # the request already has its terminal reply
            store.data[write.guard] = message_id.encode()
            store.expires[write.guard] = store.clock.now() + max(write.ttl or 0, 60)
        store.xadd(write.stream, write.fields, write.maxlen)
        if write.ttl:
            store.expire(write.stream, write.ttl)

    def _ack(self, entry: Entry) -> None:
        try:
            _value, group = self.store.group(entry.stream, self.group)
        except NoGroup:  # XACK of a stream or group gone: nothing to acknowledge
            return
        group.pel.pop(parse_id(entry.entry_id), None)

    def _append_traces(self, commit: Commit) -> None:
        """RPUSH each record; a trace key of another type loses the record, never the commit."""
        for key, record in commit.traces:
            try:
                records = self.store.typed(key, list, create=True)
            except WrongType:
                continue
            records.append(record)
            if len(records) == 1:
                self.store.expire(key, commit.trace_ttl)

    async def remove_idle_consumers(self, stream: str, min_idle_ms: int) -> list[str]:
        """The consumers of ``stream`` idle for ``min_idle_ms`` with no pending entries, removed
        (not this one), as transport/consumers.py's script does; a missing group: none."""
        value = self.store.typed(stream, Stream)
        group = value.groups.get(self.group) if value is not None else None
        if group is None:
            return []
        now = self.store.now_ms()
        owners = {p.consumer for p in group.pel.values()}
        gone = [
            name
            for name, seen in group.consumers.items()
            if name != self.consumer and name not in owners and now - seen >= min_idle_ms
        ]
        for name in gone:
            del group.consumers[name]
        return gone

    # ---------------------------------------------------------------- trimming
    async def safe_trim(self, stream: str, retention_ms: int, *, approximate: bool = True) -> int:
        """Drop entries older than ``retention_ms`` that every group delivered and acked."""
        value = self.store.typed(stream, Stream)
        if value is None:
            return 0
        minid = (max(self.store.now_ms() - retention_ms, 0), 0)
        for group in value.groups.values():
            minid = min(minid, (group.last[0], group.last[1] + 1))
            if group.pel:
                minid = min(minid, min(group.pel))
        old = [sid for sid in value.entries if sid < minid]
        for sid in old:
            del value.entries[sid]
        return len(old)
