"""A Redis-shaped asyncio client over the in-memory store, for the runtime code that still
issues its own commands (client publish, server clock, heartbeats, the deadline sweep,
breakers, the agents' per-request state, LLM cache and ledger).

Why Redis-shaped: until every command sits behind the transport facade (issue 13), these
callers speak redis-py's method names, so the in-memory transport answers in kind: same
names, same arguments, same reply shapes (bytes, dicts of XPENDING/XINFO), redis-py's
exception types (callers catch ``ResponseError``, ``WatchError``). Only the commands the
runtime uses exist; Lua scripts run as their Python ports (memory_scripts.py), an unknown
script is refused with a clear error.

No command awaits anything, so each runs atomically with respect to the other tasks of the
loop, as a command does on the server; ``WATCH`` still detects a write to a watched key made
between ``watch`` and ``execute`` by another task (per-key versions).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError, WatchError

from agent_runtime.transport.memory_scripts import run_script, script_by_sha
from agent_runtime.transport.memory_store import (
    ManualClock,
    Store,
    ZSet,
    as_bytes,
    as_text,
)
from agent_runtime.transport.memory_streams import StreamCommands, redis_errors


class _Commands(StreamCommands):
    """The commands, on ``self.store``; every write bumps the key's version (WATCH)."""

    def _drop_empty(self, name: str, container: Any) -> None:
        """Redis deletes a hash, set or sorted set that becomes empty."""
        if not container and name in self.store.data:
            self.store.delete(name)
        self._touch(name)

    # ---------------------------------------------------------------- server
    async def ping(self) -> bool:
        return True

    async def time(self) -> tuple[int, int]:
        now = self.store.clock.now()
        return int(now), int((now % 1) * 1_000_000)

    async def info(self, section: str | None = None) -> dict[str, Any]:
        return {"maxmemory_policy": "noeviction", "redis_version": "memory"}

    # ---------------------------------------------------------------- keys and strings
    @redis_errors
    async def set(
        self,
        name: str,
        value: Any,
        ex: float | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool | None:
        exists = self.store.live(name) is not None
        if (nx and exists) or (xx and not exists):
            return None
        ttl = None if ex is None and px is None else (ex if ex is not None else (px or 0) / 1000)
        self.store.write_string(name, as_bytes(value), ttl)
        return True

    @redis_errors
    async def get(self, name: str) -> bytes | None:
        value: bytes | None = self.store.typed(name, bytes)
        return value

    async def delete(self, *names: str) -> int:
        for name in names:
            self._touch(name)
        return sum(self.store.delete(name) for name in names)

    async def exists(self, *names: str) -> int:
        return sum(self.store.live(name) is not None for name in names)

    async def expire(self, name: str, time: float) -> bool:
        self._touch(name)
        return self.store.expire(name, float(time))

    async def ttl(self, name: str) -> int:
        return self.store.ttl(name)

    async def type(self, name: str) -> bytes:
        return self.store.kind(name).encode()

    async def scan_iter(
        self, match: str | None = None, count: int | None = None
    ) -> AsyncIterator[bytes]:
        for key in list(self.store.data):
            if self.store.live(key) is not None and (
                match is None or fnmatch.fnmatchcase(key, match)
            ):
                yield key.encode()

    # ---------------------------------------------------------------- hashes
    def _hash(self, name: str, create: bool = False) -> dict[bytes, bytes] | None:
        value: dict[bytes, bytes] | None = self.store.typed(name, dict, create=create)
        return value

    @redis_errors
    async def hset(
        self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None
    ) -> int:
        items = dict(mapping or {})
        if key is not None:
            items[key] = value
        target = self._hash(name, create=True)
        assert target is not None
        added = 0
        for field, val in items.items():
            added += as_bytes(field) not in target
            target[as_bytes(field)] = as_bytes(val)
        self._touch(name)
        return added

    @redis_errors
    async def hsetnx(self, name: str, key: Any, value: Any) -> int:
        target = self._hash(name, create=True)
        assert target is not None
        if as_bytes(key) in target:
            return 0
        target[as_bytes(key)] = as_bytes(value)
        self._touch(name)
        return 1

    @redis_errors
    async def hget(self, name: str, key: Any) -> bytes | None:
        return (self._hash(name) or {}).get(as_bytes(key))

    @redis_errors
    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        return dict(self._hash(name) or {})

    @redis_errors
    async def hmget(self, name: str, keys: Any, *args: Any) -> list[bytes | None]:
        fields = [keys] if isinstance(keys, (str, bytes)) else list(keys)
        found = self._hash(name) or {}
        return [found.get(as_bytes(f)) for f in [*fields, *args]]

    @redis_errors
    async def hdel(self, name: str, *keys: Any) -> int:
        found = self._hash(name) or {}
        removed = sum(found.pop(as_bytes(k), None) is not None for k in keys)
        self._drop_empty(name, found)
        return removed

    @redis_errors
    async def hincrby(self, name: str, key: Any, amount: int = 1) -> int:
        return int(self._hincr(name, key, int(amount), int))

    @redis_errors
    async def hincrbyfloat(self, name: str, key: Any, amount: float = 1.0) -> float:
        return self._hincr(name, key, float(amount), float)

    def _hincr(self, name: str, key: Any, amount: float, kind: Callable[[bytes], float]) -> float:
        """HINCRBY / HINCRBYFLOAT: ``kind`` reads the old value (int or float)."""
        target = self._hash(name, create=True)
        assert target is not None
        value = kind(target.get(as_bytes(key), b"0")) + amount
        target[as_bytes(key)] = as_bytes(value)
        self._touch(name)
        return value

    # ---------------------------------------------------------------- sets, sorted sets, lists
    @redis_errors
    async def sadd(self, name: str, *values: Any) -> int:
        target: set[bytes] = self.store.typed(name, set, create=True)
        before = len(target)
        target.update(as_bytes(v) for v in values)
        self._touch(name)
        return len(target) - before

    @redis_errors
    async def srem(self, name: str, *values: Any) -> int:
        target: set[bytes] = self.store.typed(name, set) or set()
        before = len(target)
        target.difference_update(as_bytes(v) for v in values)
        self._drop_empty(name, target)
        return before - len(target)

    @redis_errors
    async def smismember(self, name: str, values: Any, *args: Any) -> list[int]:
        found: set[bytes] = self.store.typed(name, set) or set()
        items = [values] if isinstance(values, (str, bytes)) else list(values)
        return [int(as_bytes(v) in found) for v in [*items, *args]]

    @redis_errors
    async def sismember(self, name: str, value: Any) -> int:
        return int(as_bytes(value) in (self.store.typed(name, set) or set()))

    @redis_errors
    async def zadd(
        self, name: str, mapping: dict[Any, float], nx: bool = False, gt: bool = False
    ) -> int:
        target: ZSet = self.store.typed(name, ZSet, create=True)
        added = 0
        for member, score in mapping.items():
            key, old = as_bytes(member), target.get(as_bytes(member))
            if old is None:
                added += 1
            elif nx or (gt and float(score) <= old):
                continue
            target[key] = float(score)
        self._touch(name)
        return added

    @redis_errors
    async def zrem(self, name: str, *members: Any) -> int:
        target: ZSet = self.store.typed(name, ZSet) or ZSet()
        removed = sum(target.pop(as_bytes(m), None) is not None for m in members)
        self._drop_empty(name, target)
        return removed

    @redis_errors
    async def zrangebyscore(
        self,
        name: str,
        min: Any,
        max: Any,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
    ) -> list[Any]:
        target: ZSet = self.store.typed(name, ZSet) or ZSet()
        found = target.by_score(_score(min), _score(max))
        begin = start or 0
        found = found[begin : None if num is None else begin + num]
        return [(m, target[m]) for m in found] if withscores else found

    @redis_errors
    async def zscore(self, name: str, value: Any) -> float | None:
        target: ZSet = self.store.typed(name, ZSet) or ZSet()
        return target.get(as_bytes(value))

    @redis_errors
    async def rpush(self, name: str, *values: Any) -> int:
        target: list[bytes] = self.store.typed(name, list, create=True)
        target.extend(as_bytes(v) for v in values)
        self._touch(name)
        return len(target)

    @redis_errors
    async def lrange(self, name: str, start: int, end: int) -> list[bytes]:
        items: list[bytes] = self.store.typed(name, list) or []
        stop = None if end == -1 else end + 1
        return items[start:stop]

    # ---------------------------------------------------------------- scripts
    @redis_errors
    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        keys = [as_text(k) for k in keys_and_args[:numkeys]]
        return await run_script(self, script, keys, [as_bytes(a) for a in keys_and_args[numkeys:]])

    @redis_errors
    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Every ported script counts as loaded (they live as long as the process)."""
        return await self.eval(script_by_sha(sha), numkeys, *keys_and_args)

    async def script_load(self, script: str) -> str:
        return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis's script id)


class MemoryRedis(_Commands):
    """The client. ``MemoryRedis()`` makes its own store (``clock``: a :class:`ManualClock`
    for tests that move time); clients sharing one store see the same data."""

    def __init__(self, store: Store | None = None, *, clock: ManualClock | None = None) -> None:
        self.store = store or Store(clock)

    def register_script(self, script: str) -> Callable[..., Awaitable[Any]]:
        async def call(keys: list[Any] = [], args: list[Any] = []) -> Any:  # noqa: B006
            return await self.eval(script, len(keys), *keys, *args)

        return call

    def pipeline(self, transaction: bool = True) -> MemoryPipeline:
        return MemoryPipeline(self.store, transaction)

    async def aclose(self) -> None:
        """Nothing to close (the store lives as long as its holders)."""


class MemoryPipeline(_Commands):
    """redis-py's pipeline: commands queue (each method returns the pipeline) and run in
    order on ``execute``; after ``watch`` and before ``multi`` they run at once (as in
    redis-py), and ``execute`` raises ``WatchError`` if a watched key was written since."""

    def __init__(self, store: Store, transaction: bool) -> None:
        self.store = store
        self.transaction = transaction
        self._queue: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._watched: dict[str, int] = {}
        self._immediate = False

    async def __aenter__(self) -> MemoryPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._queue.clear()
        self._watched.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or name in _OWN or not callable(attr):
            return attr
        if object.__getattribute__(self, "_immediate"):
            return attr

        def queue(*args: Any, **kwargs: Any) -> MemoryPipeline:
            self._queue.append((name, args, kwargs))
            return self

        return queue

    async def watch(self, *names: str) -> None:
        self._immediate = True
        for name in names:
            self._watched[name] = self.store.versions.get(name, 0)

    def multi(self) -> None:
        self._immediate = False

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        changed = [k for k, v in self._watched.items() if self.store.versions.get(k, 0) != v]
        self._watched.clear()
        if changed:
            self._queue.clear()
            raise WatchError(f"Watched variable changed: {changed}")
        queue, self._queue = self._queue, []
        client = MemoryRedis(self.store)
        results: list[Any] = []
        for name, args, kwargs in queue:
            try:
                results.append(await getattr(client, name)(*args, **kwargs))
            except ResponseError as exc:
                if raise_on_error:
                    raise
                results.append(exc)
        return results


_OWN = frozenset({"watch", "multi", "execute", "store", "transaction"})


def _score(value: Any) -> float:
    text = as_text(value)
    if text in ("-inf", "+inf", "inf"):
        return float(text)
    return float(text.lstrip("("))
