"""The data of the in-memory transport: one process's keyspace with Redis's types and rules.

Why a keyspace and not just queues: the worker's guarantees live in how streams, consumer
groups, pending lists, done sets, outcome guards and TTLs interact (REDIS-NOTES). Keeping the
same data model lets :mod:`agent_runtime.transport.memory` reproduce the real commands'
semantics rule by rule (delivery counts, idle times, ``SET NX`` guards, WRONGTYPE refusals)
and lets the transport contract suite hold both backends to the same assertions.

Time comes from a :class:`Clock`: :class:`SystemClock` by default, :class:`ManualClock` in
tests that move time forward (reclaim by idle time, TTL expiry) without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Fields = dict[bytes, bytes]
StreamId = tuple[int, int]


class Clock(Protocol):
    """Wall time in seconds (epoch). Idle times, TTLs and ``TIME`` all read it."""

    def now(self) -> float: ...


class SystemClock:
    """The host's wall clock (the default)."""

    def now(self) -> float:
        return time.time()


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told: ``advance(seconds)``. Tests use it to make entries
    idle or keys expire at once, instead of sleeping."""

    current: float = 1_700_000_000.0

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


class WrongType(Exception):
    """A command met a key holding another type (Redis's WRONGTYPE error)."""

    def __init__(self, key: str, held: str) -> None:
        super().__init__(f"WRONGTYPE {key} holds a {held}")


class NoGroup(Exception):
    """The stream or its consumer group does not exist (Redis's NOGROUP error)."""

    def __init__(self, key: str, group: str) -> None:
        super().__init__(f"NOGROUP No such key '{key}' or consumer group '{group}'")


def parse_id(entry_id: bytes | str) -> StreamId:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if text == "-":
        return (0, 0)
    if text in ("+", "$"):
        return (2**63, 2**63)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> bytes:
    return f"{sid[0]}-{sid[1]}".encode()


@dataclass(slots=True)
class Pending:
    """One entry of a group's pending list (PEL)."""

    consumer: str
    delivered_ms: int
    count: int


@dataclass(slots=True)
class Group:
    last: StreamId = (0, 0)
    pel: dict[StreamId, Pending] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)  # name -> last seen (ms)


@dataclass(slots=True)
class Stream:
    """A stream: entries in id order (dicts keep insertion order, ids only grow)."""

    entries: dict[StreamId, Fields] = field(default_factory=dict)
    last: StreamId = (0, 0)
    groups: dict[str, Group] = field(default_factory=dict)

    def after(self, start: StreamId) -> Iterator[tuple[StreamId, Fields]]:
        return ((sid, f) for sid, f in self.entries.items() if sid > start)


_TYPES: dict[type, str] = {
    Stream: "stream",
    set: "set",
    bytes: "string",
    dict: "hash",
    list: "list",
}


class Store:
    """The keyspace: ``data`` maps a key to a :class:`Stream`, ``set`` (of bytes), ``bytes``
    (a string), ``dict`` (a hash, bytes -> bytes), ``list`` (of bytes) or :class:`ZSet`;
    ``expires`` holds absolute expiry times. Expired keys vanish on access, as in Redis."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.data: dict[str, Any] = {}
        self.expires: dict[str, float] = {}
        self.refusals: dict[str, list[Any]] = {}  # commit mark -> what it refused (replays)
        self.versions: dict[str, int] = {}  # key -> writes through the client (WATCH)
        self._written = asyncio.Event()  # replaced after each wake-up: BLOCK readers wait on it
        self.interrupts = 0  # interrupt(): BLOCKed reads return at once (shutdown)

    # ---------------------------------------------------------------- time and keys
    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def live(self, key: str) -> Any:
        """The value at ``key`` (None when absent or expired)."""
        at = self.expires.get(key)
        if at is not None and at <= self.clock.now():
            self.delete(key)
        return self.data.get(key)

    def kind(self, key: str) -> str:
        value = self.live(key)
        if value is None:
            return "none"
        return "zset" if isinstance(value, ZSet) else _TYPES[type(value)]

    def typed(self, key: str, cls: type, create: bool = False) -> Any:
        """The value at ``key`` if it is a ``cls`` (a new one when ``create``), None when absent;
        raises :class:`WrongType` for a key of another type."""
        value = self.live(key)
        if value is None:
            if not create:
                return None
            value = self.data[key] = cls()
        elif type(value) is not cls:  # exact: a ZSet is a dict, but not a hash
            raise WrongType(key, self.kind(key))
        return value

    def delete(self, key: str) -> int:
        self.expires.pop(key, None)
        return 1 if self.data.pop(key, None) is not None else 0

    def expire(self, key: str, seconds: float) -> bool:
        if self.live(key) is None:
            return False
        self.expires[key] = self.clock.now() + seconds
        return True

    def ttl(self, key: str) -> int:
        if self.live(key) is None:
            return -2
        at = self.expires.get(key)
        return -1 if at is None else max(round(at - self.clock.now()), 0)

    def touch(self, key: str) -> None:
        """Count a write to ``key`` (a WATCH on it then fails its transaction)."""
        self.versions[key] = self.versions.get(key, 0) + 1

    def write_string(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """SET ``key`` (any old value and TTL replaced), synchronously."""
        self.delete(key)
        self.data[key] = value
        if ttl is not None:
            self.expire(key, ttl)
        self.touch(key)

    # ---------------------------------------------------------------- wake-ups
    def written(self) -> None:
        """Wake every BLOCKed reader (they look again and wait again if nothing is theirs)."""
        self._written.set()
        self._written = asyncio.Event()

    def interrupt(self) -> None:
        """End every BLOCK now, data or not (stopping in-process workers at once)."""
        self.interrupts += 1
        self.written()

    async def wait_written(self, timeout_s: float) -> None:
        """Until the next write or ``timeout_s`` (a BLOCK); returns either way."""
        event = self._written
        try:
            await asyncio.wait_for(event.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- streams
    def xadd(self, key: str, fields: Fields, maxlen: int | None = None) -> bytes:
        stream: Stream = self.typed(key, Stream, create=True)
        ms = self.now_ms()
        sid = (ms, 0) if ms > stream.last[0] else (stream.last[0], stream.last[1] + 1)
        stream.entries[sid] = dict(fields)
        stream.last = sid
        if maxlen is not None and len(stream.entries) > maxlen:
            for old in list(stream.entries)[: len(stream.entries) - maxlen]:
                del stream.entries[old]
        self.written()
        return format_id(sid)

    def group(self, key: str, name: str) -> tuple[Stream, Group]:
        stream = self.typed(key, Stream)
        if stream is None or name not in stream.groups:
            raise NoGroup(key, name)
        return stream, stream.groups[name]

    def deliver(self, group: Group, consumer: str, sid: StreamId, count: int) -> None:
        """Assign ``sid`` to ``consumer`` with delivery count ``count``, idle 0."""
        now = self.now_ms()
        group.pel[sid] = Pending(consumer, now, count)
        group.consumers[consumer] = now


class ZSet(dict[bytes, float]):
    """A sorted set: member -> score (sorted on read; the sets here are small)."""

    def by_score(self, low: float, high: float) -> list[bytes]:
        return [m for m, s in sorted(self.items(), key=lambda i: (i[1], i[0])) if low <= s <= high]


def as_bytes(value: Any) -> bytes:
    """A value as Redis stores it: bytes (text encoded, numbers formatted)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode()


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
