"""The stream commands of the in-memory transport's Redis-shaped client
(:mod:`agent_runtime.transport.memory_redis`): XADD, XRANGE, XREAD (non-blocking), consumer
groups, XACK, XPENDING, XINFO, XTRIM -- the reply shapes of redis-py (bytes ids, the dicts of
XPENDING and XINFO), so the code written for a server reads them unchanged."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from agent_runtime.transport.memory_store import (
    Group,
    NoGroup,
    Store,
    Stream,
    WrongType,
    as_bytes,
    format_id,
    parse_id,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def redis_errors(fn: F) -> F:
    """Raise the store's errors as redis-py's ``ResponseError`` (what callers catch)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except (WrongType, NoGroup) as exc:
            raise ResponseError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


class StreamCommands:
    """Stream commands on ``self.store``; every write bumps the key's version (WATCH)."""

    store: Store

    def _touch(self, key: str) -> None:
        self.store.touch(key)

    # ---------------------------------------------------------------- streams
    @redis_errors
    async def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        id: str = "*",
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> bytes:
        self._touch(name)
        return self.store.xadd(name, {as_bytes(k): as_bytes(v) for k, v in fields.items()}, maxlen)

    @redis_errors
    async def xlen(self, name: str) -> int:
        value = self.store.typed(name, Stream)
        return 0 if value is None else len(value.entries)

    @redis_errors
    async def xrange(
        self, name: str, min: Any = "-", max: Any = "+", count: int | None = None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        value = self.store.typed(name, Stream)
        low, high = parse_id(min), parse_id(max)
        rows = (
            [] if value is None else [(s, f) for s, f in value.entries.items() if low <= s <= high]
        )
        return [(format_id(s), dict(f)) for s, f in rows[:count]]

    @redis_errors
    async def xread(
        self, streams: dict[str, Any], count: int | None = None, block: int | None = None
    ) -> list[list[Any]]:
        """Entries after the given ids (non-blocking: ``block`` is not supported here)."""
        out: list[list[Any]] = []
        for name, last in streams.items():
            value = self.store.typed(name, Stream)
            if value is None:
                continue
            rows = [(format_id(s), dict(f)) for s, f in value.after(parse_id(last))][:count]
            if rows:
                out.append([name.encode(), rows])
        return out

    async def xrevrange(
        self, name: str, max: Any = "+", min: Any = "-", count: int | None = None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        rows = await self.xrange(name, min, max)
        return list(reversed(rows))[:count]

    @redis_errors
    async def xdel(self, name: str, *ids: Any) -> int:
        value = self.store.typed(name, Stream)
        if value is None:
            return 0
        return sum(value.entries.pop(parse_id(i), None) is not None for i in ids)

    @redis_errors
    async def xgroup_create(
        self, name: str, groupname: str, id: str = "$", mkstream: bool = False
    ) -> bool:
        value = self.store.typed(name, Stream, create=mkstream)
        if value is None:
            raise ResponseError("ERR The XGROUP subcommand requires the key to exist")
        if groupname in value.groups:
            raise ResponseError("BUSYGROUP Consumer Group name already exists")
        value.groups[groupname] = Group(last=value.last if id == "$" else parse_id(id))
        return True

    @redis_errors
    async def xack(self, name: str, groupname: str, *ids: Any) -> int:
        _value, group = self.store.group(name, groupname)
        return sum(group.pel.pop(parse_id(i), None) is not None for i in ids)

    @redis_errors
    async def xpending(self, name: str, groupname: str) -> dict[str, Any]:
        _value, group = self.store.group(name, groupname)
        ids = sorted(group.pel)
        owners: dict[str, int] = {}
        for pending in group.pel.values():
            owners[pending.consumer] = owners.get(pending.consumer, 0) + 1
        return {
            "pending": len(ids),
            "min": format_id(ids[0]) if ids else None,
            "max": format_id(ids[-1]) if ids else None,
            "consumers": [{"name": n.encode(), "pending": c} for n, c in owners.items()],
        }

    @redis_errors
    async def xpending_range(
        self,
        name: str,
        groupname: str,
        min: Any,
        max: Any,
        count: int,
        consumername: str | None = None,
        idle: int | None = None,
    ) -> list[dict[str, Any]]:
        _value, group = self.store.group(name, groupname)
        now, low, high = self.store.now_ms(), parse_id(min), parse_id(max)
        rows = []
        for sid in sorted(group.pel):
            pending = group.pel[sid]
            age = now - pending.delivered_ms
            if not low <= sid <= high or (consumername and pending.consumer != consumername):
                continue
            if idle is not None and age < idle:
                continue
            rows.append(
                {
                    "message_id": format_id(sid),
                    "consumer": pending.consumer.encode(),
                    "time_since_delivered": age,
                    "times_delivered": pending.count,
                }
            )
        return rows[:count]

    @redis_errors
    async def xinfo_groups(self, name: str) -> list[dict[str, Any]]:
        value = self.store.typed(name, Stream)
        if value is None:
            raise ResponseError("ERR no such key")
        return [
            {
                "name": group_name.encode(),
                "consumers": len(group.consumers),
                "pending": len(group.pel),
                "last-delivered-id": format_id(group.last),
            }
            for group_name, group in value.groups.items()
        ]

    @redis_errors
    async def xinfo_consumers(self, name: str, groupname: str) -> list[dict[str, Any]]:
        _value, group = self.store.group(name, groupname)
        now = self.store.now_ms()
        return [
            {
                "name": consumer.encode(),
                "pending": sum(p.consumer == consumer for p in group.pel.values()),
                "idle": now - seen,
            }
            for consumer, seen in group.consumers.items()
        ]

    @redis_errors
    async def xtrim(self, name: str, minid: Any = None, approximate: bool = True) -> int:
        value = self.store.typed(name, Stream)
        if value is None or minid is None:
            return 0
        old = [sid for sid in value.entries if sid < parse_id(minid)]
        for sid in old:
            del value.entries[sid]
        return len(old)
