"""Redis Streams operations of the runtime. Only agent_runtime/transport talks to Redis.

Delivery-count rules this module relies on (see docs/architecture.md):

* ``XREADGROUP >`` delivers a new entry with count 1: no extra round trip.
* Re-reading the own PEL, ``XCLAIM`` and ``XAUTOCLAIM`` (full entries) add 1; their counts are
  read back with one ``XPENDING`` range per call.
* ``XCLAIM ... JUSTID`` renews a live handler's lease (resets idle) without counting.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

from agent_runtime.errors import TransportError
from agent_runtime.limits import MAX_ERROR_TEXT
from agent_runtime.transport.original import describe_original

Fields = dict[bytes, bytes]
DAY = 86_400
# Trace records of one commit on a single server: RPUSH each record (the raw JSON) to its
# request's list, EXPIRE only a list this push created (RPUSH replied 1), pcall throughout so a
# trace key of another type (or an OOM refusal) loses the record and never fails the commit.
# Returns the number of records written.
TRACE_SCRIPT = """
local written = 0
for i, key in ipairs(KEYS) do
  local length = redis.pcall('RPUSH', key, ARGV[i + 1])
  if type(length) == 'number' then
    written = written + 1
    if length == 1 then
      redis.pcall('EXPIRE', key, ARGV[1])
    end
  end
end
return written
"""


class CommitTokens:
    """Commit tokens unique across processes and restarts: a random 64-bit process part
    (drawn again in a forked child) and a counter. ``uuid4().hex`` per commit cost ~29 k
    instructions (an ``os.urandom`` system call and a UUID object); this ~1 k (issue 17,
    docs/benchmarks.md "low-rate CPU per message")."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._process = ""
        self.renew()

    def renew(self) -> None:
        self._process = uuid.uuid4().hex[:16]
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._process}{next(self._count):x}"


_tokens = CommitTokens()
os.register_at_fork(after_in_child=_tokens.renew)


@dataclass(slots=True)
class Entry:
    """One stream entry delivered to this consumer."""

    stream: str
    entry_id: bytes
    fields: Fields
    delivery_count: int = 1


@dataclass(slots=True)
class Write:
    """One XADD of a commit. ``ttl``: EXPIRE the stream after the write (per-request streams);
    ``maxlen``: XADD MAXLEN ~ (streams no group reads); ``guard``: a request's outcome key --
    the write happens only if ``SET guard NX`` succeeds (one terminal reply per request)."""

    stream: str
    fields: Fields
    ttl: int | None = None
    maxlen: int | None = None
    guard: str | None = None


@dataclass(slots=True)
class Handled:
    """An input whose handler finished: its outputs, its done mark (``message_id``; empty for
    a duplicate, which is only acked) and its ack."""

    entry: Entry
    message_id: str = ""
    writes: list[Write] = field(default_factory=list)


@dataclass(slots=True)
class DeadLetter:
    """Move ``entry`` to ``dlq`` with ``reason`` (a code) and ``error`` (human text), and write
    ``reply`` (the requester's ``request.failed``, guarded) in the same commit. ``original``:
    what the letter keeps of the entry (:func:`describe_original`; computed from ``entry`` with
    ``whole=False`` when not given)."""

    entry: Entry
    dlq: str
    reason: str
    error: str
    extra: dict[str, str] = field(default_factory=dict)
    reply: Write | None = None
    original: Fields | None = None


@dataclass(slots=True)
class Commit:
    """Everything one flush writes: handled inputs (outputs, done marks, acks), dead letters
    (+ failure replies) and trace records. ``token`` names this commit: the atomic path marks
    it applied, so a commit replayed after an ambiguous failure (the server ran it, the reply
    was lost) is refused instead of writing its outputs twice."""

    handled: list[Handled] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    traces: list[tuple[str, bytes]] = field(default_factory=list)  # (trace key, JSON record)
    trace_ttl: int = 24 * 3600
    token: str = field(default_factory=lambda: _tokens.next())

    def __bool__(self) -> bool:
        return bool(self.handled or self.dead or self.traces)


@dataclass(slots=True)
class Unwritable:
    """A handled input whose outputs the server refused for a reason of their own (a key of
    another type): it was not acked; the worker dead-letters it alone."""

    handled: Handled
    error: str


class StreamBus:
    """Stream operations for one agent type's consumer group, on one Redis client."""

    def __init__(
        self,
        redis: Any,
        *,
        group: str,
        consumer: str,
        cluster: bool = False,
        done_key: Callable[[int], str] | None = None,
        done_ttl: int = DAY,
        dlq_maxlen: int = 100_000,
        atomic: bool = True,
        mark_prefix: str | None = None,
    ) -> None:
        self.redis = redis
        self.atomic = atomic  # commit with one script (single server with scripting)
        self.mark_prefix = mark_prefix or f"commit:{group}:{consumer}:"
        self._commit_script: Any = None
        self._reply_script: Any = None
        self._consumers_script: Any = None
        self.done_key = done_key or (lambda day: f"done:{group}:{day}")
        self.group = group
        self.consumer = consumer
        self.cluster = cluster
        self.done_ttl = done_ttl
        self.dlq_maxlen = dlq_maxlen
        self._turn = 0  # cluster mode: the shard the next read starts at

    async def check_server(self) -> None:
        """Refuse a server whose ``maxmemory-policy`` evicts keys: eviction silently deletes
        streams and de-duplication sets and loses messages (REDIS-NOTES). Every node of a
        cluster is checked; ``noeviction`` is required. A user without ``INFO`` (an agent's
        ACL user: it is an ``@dangerous`` command) cannot check: the operator's admin
        connection does (``up`` does on its own server)."""
        try:
            info = await self.redis.info("memory")
        except NoPermissionError:
            return
        nodes = (
            [info]
            if "maxmemory_policy" in info
            else [node for node in info.values() if isinstance(node, dict)]
        )
        policies = {_text(node.get("maxmemory_policy", "noeviction")) for node in nodes}
        bad = sorted(policies - {"noeviction"})
        if bad:
            raise TransportError(
                f"the Redis server's maxmemory-policy is {', '.join(bad)}: it would evict "
                "streams and de-duplication keys and lose messages; set "
                "'maxmemory-policy noeviction'"
            )

    async def ensure_group(self, stream: str) -> None:
        """Create the group at id 0 (sees every entry ever written), idempotently."""
        try:
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, streams: Sequence[str], count: int, block_ms: int) -> list[Entry]:
        """New entries (``>``), delivery count 1, at most ``count``. One XREADGROUP for all
        streams, except in Cluster mode (see :meth:`_read_each`)."""
        if self.cluster and len(streams) > 1:
            return await self._read_each(streams, count, block_ms)
        return await self._xreadgroup({s: ">" for s in streams}, count, block_ms)

    @property
    def folds_check(self) -> bool:
        """Whether :meth:`read_checked` is one round trip (not on Cluster, where the done sets
        and the inboxes live in other slots and each shard is read apart)."""
        return not self.cluster

    async def read_checked(
        self, streams: Sequence[str], count: int, message_ids: Sequence[str]
    ) -> tuple[list[Entry], list[bool]]:
        """Whether each of ``message_ids`` (the previous read's entries, decoded) is marked
        done, and up to ``count`` new entries (``>``, no BLOCK; none for 0), in one pipeline:
        two SMISMEMBER (the current and previous bucket), then XREADGROUP. The entries read
        are checked by the next call. A pipeline, not a script: the server then does what
        the separate check and read did (a read script returning the entries through Lua
        cost the server about 25 us more per message at batch 4). Measured (docs/
        benchmarks.md "Issue 17: round trips"), a worker draining at batch 4: round trips
        per message 0.70 -> 0.50, instructions per message -9.3 % (no-op) and -5.7 %
        (forwarding stage); its commits hold 4 messages instead of ~5, so the server's CPU
        per message rose ~5 %."""
        if self.cluster:
            entries = await self._read_now(streams, count)
            return entries, await self.already_done(list(message_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            if message_ids:
                for bucket in self._live_buckets():
                    pipe.smismember(self.done_key(bucket), list(message_ids))
            if count:
                pipe.execute_command(*self._read_args({s: ">" for s in streams}, count, None))
            replies = await pipe.execute() if len(pipe) else []
        done = []
        if message_ids:
            previous, current = replies[0], replies[1]
            done = [bool(a or b) for a, b in zip(previous, current, strict=True)]
        return (_entries(replies[-1]) if count else []), done

    async def _read_now(self, streams: Sequence[str], count: int) -> list[Entry]:
        """New entries without waiting, one stream at a time (Cluster: shards in other slots)."""
        entries: list[Entry] = []
        for stream in streams if count else ():
            entries += await self._xreadgroup({stream: ">"}, count - len(entries), None)
            if len(entries) >= count:
                break
        return entries

    async def _read_each(self, streams: Sequence[str], count: int, block_ms: int) -> list[Entry]:
        """Cluster mode: shards live in different slots, so one XREADGROUP per stream. A
        non-blocking sweep (starting at a rotating shard, so none starves) returns what is
        there; only when every shard is empty does it BLOCK, on one shard in turn, for
        ``block_ms / shards``: busy shards are never held up by idle ones."""
        self._turn = (self._turn + 1) % len(streams)
        order = [*streams[self._turn :], *streams[: self._turn]]
        out: list[Entry] = []
        for stream in order:
            out += await self._xreadgroup({stream: ">"}, count - len(out), None)
            if len(out) >= count:
                break
        if out:
            return out
        return await self._xreadgroup({order[0]: ">"}, count, max(block_ms // len(streams), 1))

    async def read_own_pending(self, stream: str, count: int) -> list[Entry]:
        """This consumer's own pending entries (after a restart), with their new counts.
        Entries trimmed away while pending come back as (id, None): they are dropped from the
        PEL by XACK and reported by :meth:`ack_missing` callers as an alarm."""
        reply = await self.redis.xreadgroup(self.group, self.consumer, {stream: "0"}, count=count)
        entries = []
        missing = []
        for _name, items in reply or []:
            for entry_id, fields in items:
                if fields is None:
                    missing.append(entry_id)
                else:
                    entries.append(Entry(stream, entry_id, fields))
        if missing:
            await self.redis.xack(stream, self.group, *missing)
        await self._fill_counts(stream, entries)
        return entries

    async def reclaim(self, stream: str, min_idle_ms: int, limit: int) -> tuple[list[Entry], int]:
        """XAUTOCLAIM entries idle for ``min_idle_ms`` (dead consumers' work), looping until the
        cursor returns to 0-0 or ``limit`` entries were claimed. Returns the entries with their
        delivery counts, and how many pending ids had been deleted by trimming (an alarm)."""
        cursor: bytes | str = "0-0"
        claimed: list[Entry] = []
        deleted = 0
        while len(claimed) < limit:
            reply = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_ms,
                start_id=cursor,
                count=min(100, limit),
            )
            cursor, items = reply[0], reply[1]
            deleted += len(reply[2]) if len(reply) > 2 else 0
            claimed += [Entry(stream, eid, f) for eid, f in items if f is not None]
            if cursor in (b"0-0", "0-0"):
                break
        await self._fill_counts(stream, claimed)
        return claimed, deleted

    async def renew(self, leases: dict[str, list[bytes]]) -> None:
        """Reset the idle time of in-flight entries (``XCLAIM ... JUSTID``: no count)."""
        if not leases:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in leases.items():
                for chunk in _chunks(ids, 500):
                    pipe.xclaim(stream, self.group, self.consumer, 0, chunk, justid=True)
            await pipe.execute()

    async def hand_back(self, leases: dict[str, list[bytes]], idle_ms: int) -> None:
        """Mark entries as idle for ``idle_ms`` (``XCLAIM ... IDLE n JUSTID``: no count) so the
        next XAUTOCLAIM of any worker takes them at once."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in leases.items():
                for chunk in _chunks(ids, 500):
                    pipe.xclaim(
                        stream, self.group, self.consumer, 0, chunk, idle=idle_ms, justid=True
                    )
            await pipe.execute()

    async def redeliver(self, stream: str, ids: list[bytes]) -> list[Entry]:
        """Claim own entries again as full entries: the delivery count rises by one."""
        items = await self.redis.xclaim(stream, self.group, self.consumer, 0, ids)
        entries = [Entry(stream, eid, f) for eid, f in items if f is not None]
        await self._fill_counts(stream, entries)
        return entries

    async def own_pending(self, stream: str, min_idle_ms: int, count: int) -> list[bytes]:
        """Ids of this consumer's pending entries idle for at least ``min_idle_ms``."""
        rows = await self.redis.xpending_range(
            stream, self.group, "-", "+", count, consumername=self.consumer, idle=min_idle_ms
        )
        return [_as_bytes(row["message_id"]) for row in rows]

    async def claim(self, stream: str, ids: list[bytes], min_idle_ms: int) -> list[Entry]:
        """XCLAIM ``ids`` still idle for ``min_idle_ms`` to this consumer as full entries (the
        delivery count rises by one); an entry acked or renewed meanwhile is not taken."""
        items = await self.redis.xclaim(stream, self.group, self.consumer, min_idle_ms, ids)
        entries = [Entry(stream, eid, f) for eid, f in items if f is not None]
        await self._fill_counts(stream, entries)
        return entries

    def _bucket(self) -> int:
        return int(time.time() // self.done_ttl)

    def _live_buckets(self) -> tuple[int, int]:
        current = self._bucket()
        return current - 1, current

    async def already_done(self, message_ids: list[str]) -> list[bool]:
        """Which message ids are marked done: two SMISMEMBER (current and previous bucket of
        ``done_ttl`` seconds), pipelined, for the whole batch."""
        if not message_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in self._live_buckets():
                pipe.smismember(self.done_key(bucket), message_ids)
            previous, current = await pipe.execute()
        return [bool(a or b) for a, b in zip(previous, current, strict=True)]

    async def forget_done(self, message_id: str) -> None:
        """Remove a done mark (operations and tests: makes a message handleable again)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in self._live_buckets():
                pipe.srem(self.done_key(bucket), message_id)
            await pipe.execute()

    async def commit(self, commit: Commit) -> list[Unwritable]:
        """Write ``commit`` (agent_runtime/transport/commit.py: one atomic script on a single
        server, two pipelined round trips on Cluster). Raises on an infrastructure error (OOM,
        lost connection: nothing was acked, retry the same commit); returns the handled inputs
        refused for a reason of their own output keys (not acked: dead-letter them)."""
        from agent_runtime.transport import commit as committing

        done = self._live_buckets()
        keys = (self.done_key(done[0]), self.done_key(done[1]))
        expire = 2 * self.done_ttl + 60
        if self.cluster or not self.atomic:
            if self._reply_script is None:
                self._reply_script = self.redis.register_script(committing.REPLY_SCRIPT)
            return await committing.commit_portable(
                self.redis,
                commit,
                group=self.group,
                done_key=keys[1],
                done_expire=expire,
                consumer=self.consumer,
                dlq_maxlen=self.dlq_maxlen,
                cluster=self.cluster,
                reply_script=self._reply_script,
            )
        if self._commit_script is None:
            self._commit_script = self.redis.register_script(committing.COMMIT_SCRIPT)
        args = committing.script_args(
            commit,
            mark=f"{self.mark_prefix}{commit.token}",
            group=self.group,
            done=keys,
            done_expire=expire,
            consumer=self.consumer,
            dlq_maxlen=self.dlq_maxlen,
        )
        reply = await self._commit_script(keys=[], args=args)
        return committing.refused_items(commit, reply)

    async def remove_idle_consumers(self, stream: str, min_idle_ms: int) -> list[str]:
        """Remove the group's consumers of ``stream`` idle for ``min_idle_ms`` that own no
        pending entries, never this one (transport/consumers.py: atomic check and delete)."""
        from agent_runtime.transport import consumers

        if self._consumers_script is None:
            self._consumers_script = self.redis.register_script(consumers.REMOVE_IDLE_SCRIPT)
        return await consumers.remove_idle_consumers(
            self._consumers_script, stream, self.group, min_idle_ms, self.consumer
        )

    async def safe_trim(self, stream: str, retention_ms: int, *, approximate: bool = True) -> int:
        """Trim entries older than ``retention_ms`` that every group has delivered and acked.
        MINID never passes the oldest pending entry or any group's last-delivered id."""
        minid = _ms_id(int(time.time() * 1000) - retention_ms)
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return 0
        for group in groups:
            last = group.get("last-delivered-id", b"0-0")
            minid = min(minid, _next_id(last), key=_id_key)
            if group.get("pending", 0):
                summary = await self.redis.xpending(stream, group["name"])
                if summary.get("min"):
                    minid = min(minid, _as_bytes(summary["min"]), key=_id_key)
        return int(await self.redis.xtrim(stream, minid=minid, approximate=approximate))

    async def _xreadgroup(
        self, streams: dict[str, str], count: int, block_ms: int | None
    ) -> list[Entry]:
        if self.cluster:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, streams, count=count, block=block_ms
            )
            out = []
            for name, items in reply or []:
                stream = name.decode() if isinstance(name, bytes) else name
                out += [Entry(stream, eid, fields) for eid, fields in items]
            return out
        return await self._xreadgroup_raw(streams, count, block_ms)

    async def _xreadgroup_raw(
        self, streams: dict[str, str], count: int, block_ms: int | None
    ) -> list[Entry]:
        """The hot read: the command name as bytes makes redis-py skip its reply callback
        (RESP2/RESP3 -> dicts of dicts, a streaming-lag hook), and the flat field lists become
        dicts here in one pass: about a microsecond less per entry."""
        args = self._read_args(streams, count, block_ms)
        return _entries(await self.redis.execute_command(*args))

    def _read_args(self, streams: dict[str, str], count: int, block_ms: int | None) -> list[Any]:
        args: list[Any] = [b"XREADGROUP", b"GROUP", self.group, self.consumer, b"COUNT", count]
        if block_ms is not None:
            args += [b"BLOCK", block_ms]
        return [*args, b"STREAMS", *streams, *streams.values()]

    async def _fill_counts(self, stream: str, entries: list[Entry]) -> None:
        if not entries:
            return
        ids = sorted((e.entry_id for e in entries), key=_id_key)
        rows = await self.redis.xpending_range(
            stream,
            self.group,
            ids[0],
            ids[-1],
            count=len(entries) * 4 + 100,
            consumername=self.consumer,
        )
        counts = {row["message_id"]: row["times_delivered"] for row in rows}
        for entry in entries:
            entry.delivery_count = int(counts.get(entry.entry_id, entry.delivery_count))


def _entries(reply: Any) -> list[Entry]:
    """Entries of a raw XREADGROUP reply (RESP2 lists or RESP3 maps; flat field lists)."""
    if not reply:
        return []
    out: list[Entry] = []
    for name, items in reply.items() if isinstance(reply, dict) else reply:
        stream = name.decode() if isinstance(name, bytes) else name
        for entry_id, flat in items:
            it = iter(flat)
            out.append(Entry(stream, entry_id, dict(zip(it, it, strict=True))))
    return out


def _dead_fields(dead: DeadLetter, consumer: str) -> dict[bytes, bytes]:
    fields = {
        b"reason": dead.reason.encode(),
        b"error": dead.error.encode()[:MAX_ERROR_TEXT],
        b"stream": dead.entry.stream.encode(),
        b"entry_id": dead.entry.entry_id,
        b"delivery_count": str(dead.entry.delivery_count).encode(),
        b"consumer": consumer.encode(),
        b"failed_at_ms": str(int(time.time() * 1000)).encode(),
    }
    fields.update({k.encode(): v.encode() for k, v in dead.extra.items()})
    original = dead.original
    if original is None:
        original = describe_original(dead.entry.fields, whole=False)
    fields.update(original)
    return fields


def original_fields(dead_entry: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The original stream entry fields kept whole in a dead-letter entry (for replay);
    prefixes of longer fields (``orig_head.NAME``) are not among them."""
    return {k[5:]: v for k, v in dead_entry.items() if k.startswith(b"orig.")}


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: Any) -> bytes:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}".encode()


def _ms_id(ms: int) -> bytes:
    return f"{max(ms, 0)}-0".encode()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _chunks(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
