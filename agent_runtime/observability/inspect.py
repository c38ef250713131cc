"""Read-only views of the runtime's Redis state, shared by ``status``, ``health``, ``trace``,
``dlq`` and the metrics collector. Every function takes the (bytes-returning) async client and
the :class:`~agent_runtime.transport.keys.Keys` of the pipeline; none writes.

Key discovery uses SCAN with the patterns of keys.py (never KEYS); stream reads are capped so a
huge dead-letter stream cannot stall a status call.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from redis.exceptions import ResponseError

from agent_runtime.transport.keys import Keys

DLQ_SCAN_LIMIT = 10_000


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def entry_age(entry_id: Any, now: float | None = None) -> float:
    """Seconds since the entry was added (the millisecond part of its id)."""
    added = int(text(entry_id).split("-", 1)[0]) / 1000
    return max((now or time.time()) - added, 0.0)


async def scan_keys(redis: Any, pattern: str, type_: str | None = None) -> list[str]:
    found: set[str] = set()
    async for key in redis.scan_iter(match=pattern, count=500, _type=type_):
        found.add(text(key))
    return sorted(found)


async def group_views(redis: Any, stream: str, *, consumers: bool = True) -> list[dict[str, Any]]:
    """The consumer groups of ``stream``: pending, lag, oldest pending age, consumers."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return []
    out = []
    for group in groups:
        name = text(group.get("name"))
        view: dict[str, Any] = {
            "group": name,
            "pending": int(group.get("pending") or 0),
            "lag": None if group.get("lag") is None else int(group["lag"]),
            "last_delivered_id": text(group.get("last-delivered-id")),
            "oldest_pending_age_s": None,
            "consumers": [],
        }
        if view["pending"]:
            summary = await redis.xpending(stream, name)
            if summary.get("min"):
                view["oldest_pending_age_s"] = round(entry_age(summary["min"]), 3)
        if consumers:
            view["consumers"] = await consumer_views(redis, stream, name)
        out.append(view)
    return out


async def consumer_views(redis: Any, stream: str, group: str) -> list[dict[str, Any]]:
    try:
        rows = await redis.xinfo_consumers(stream, group)
    except ResponseError:
        return []
    return [
        {
            "consumer": text(row.get("name")),
            "pending": int(row.get("pending") or 0),
            "idle_s": round(int(row.get("idle") or 0) / 1000, 3),
            "inactive_s": (
                None if row.get("inactive") is None else round(int(row["inactive"]) / 1000, 3)
            ),
        }
        for row in rows
    ]


async def stream_view(redis: Any, stream: str) -> dict[str, Any]:
    return {
        "stream": stream,
        "length": int(await redis.xlen(stream)),
        "groups": await group_views(redis, stream),
    }


async def dead_letters(
    redis: Any, dlq: str, limit: int = DLQ_SCAN_LIMIT
) -> list[tuple[str, dict[bytes, bytes]]]:
    """The newest ``limit`` entries of a dead-letter stream, oldest first."""
    rows = await redis.xrevrange(dlq, count=limit)
    return [(text(entry_id), fields) for entry_id, fields in reversed(rows)]


async def dead_letter_view(redis: Any, dlq: str) -> dict[str, Any]:
    rows = await dead_letters(redis, dlq)
    reasons = Counter(text(fields.get(b"reason")) or "unknown" for _, fields in rows)
    return {
        "stream": dlq,
        "length": int(await redis.xlen(dlq)),
        "by_reason": dict(sorted(reasons.items())),
        "oldest_age_s": round(entry_age(rows[0][0]), 3) if rows else None,
        "counted": len(rows),
    }


async def heartbeats(redis: Any, keys: Keys) -> list[dict[str, Any]]:
    """Live workers: every heartbeat key that has not expired, with its age."""
    names = await scan_keys(redis, keys.heartbeat_pattern())
    if not names:
        return []
    values = [await redis.get(name) for name in names]
    now = time.time()
    out = []
    for value in values:
        if value is None:
            continue
        try:
            beat = json.loads(value)
        except ValueError:
            continue
        if isinstance(beat, dict):
            beat["age_s"] = round(now - float(beat.get("at") or now), 3)
            out.append(beat)
    return sorted(out, key=lambda b: (str(b.get("agent")), str(b.get("consumer"))))


async def breakers(redis: Any, keys: Keys) -> dict[str, dict[str, str]]:
    """Shared circuit-breaker hashes (written by the policies), every field as text."""
    head = keys.breaker("")
    out = {}
    for key in await scan_keys(redis, keys.breaker("*")):
        try:
            fields = await redis.hgetall(key)
        except ResponseError:  # not a hash: someone else's key
            continue
        out[key[len(head) :]] = {text(k): text(v) for k, v in sorted(fields.items())}
    return out


def inbox_agent(keys: Keys, stream: str) -> str:
    """The agent type of an inbox stream name (``P:inbox:AGENT`` or ``P:inbox:AGENT:N``)."""
    rest = stream[len(keys.inbox("")) :]
    return rest.split(":", 1)[0]


def dlq_agent(keys: Keys, stream: str) -> str:
    return stream[len(keys.dlq("")) :]
