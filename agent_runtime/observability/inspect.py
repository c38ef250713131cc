"""Read-only views of the runtime's Redis state, shared by ``status``, ``health``, ``trace``,
``dlq`` and the metrics collector. Every function takes the transport's readers
(:class:`~agent_runtime.transport.inspect.RuntimeReader`,
:class:`~agent_runtime.transport.dlq.DeadLetterStore`) and the
:class:`~agent_runtime.transport.keys.Keys` of the pipeline, and shapes what they read into
plain dicts; none writes, none issues a Redis command itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.inspect import RuntimeReader, text
from agent_runtime.transport.keys import Keys

__all__ = [
    "breakers",
    "consumer_views",
    "dead_letter_view",
    "dlq_agent",
    "entry_age",
    "group_views",
    "heartbeats",
    "stream_view",
    "text",
]


def entry_age(entry_id: Any, now: float | None = None) -> float:
    """Seconds since the entry was added (the millisecond part of its id)."""
    added = int(text(entry_id).split("-", 1)[0]) / 1000
    return max((now or time.time()) - added, 0.0)


async def group_views(
    reader: RuntimeReader, stream: str, *, consumers: bool = True
) -> list[dict[str, Any]]:
    """The consumer groups of ``stream``: pending, lag, oldest pending age, consumers."""
    out = []
    for group in await reader.groups(stream):
        view: dict[str, Any] = {
            "group": group.name,
            "pending": group.pending,
            "lag": group.lag,
            "last_delivered_id": group.last_delivered_id,
            "oldest_pending_age_s": None,
            "consumers": [],
        }
        if group.pending:
            oldest = await reader.oldest_pending(stream, group.name)
            if oldest:
                view["oldest_pending_age_s"] = round(entry_age(oldest), 3)
        if consumers:
            view["consumers"] = await consumer_views(reader, stream, group.name)
        out.append(view)
    return out


async def consumer_views(reader: RuntimeReader, stream: str, group: str) -> list[dict[str, Any]]:
    return [
        {
            "consumer": row.name,
            "pending": row.pending,
            "idle_s": round(row.idle_ms / 1000, 3),
            "inactive_s": None if row.inactive_ms is None else round(row.inactive_ms / 1000, 3),
        }
        for row in await reader.consumers(stream, group)
    ]


async def stream_view(reader: RuntimeReader, stream: str) -> dict[str, Any]:
    return {
        "stream": stream,
        "length": await reader.stream_length(stream),
        "groups": await group_views(reader, stream),
    }


async def dead_letter_view(letters: DeadLetterStore, dlq: str) -> dict[str, Any]:
    rows = await letters.entries(dlq)
    reasons = Counter(text(fields.get(b"reason")) or "unknown" for _, fields in rows)
    return {
        "stream": dlq,
        "length": await letters.length(dlq),
        "by_reason": dict(sorted(reasons.items())),
        "oldest_age_s": round(entry_age(rows[0][0]), 3) if rows else None,
        "counted": len(rows),
    }


async def heartbeats(reader: RuntimeReader, keys: Keys) -> list[dict[str, Any]]:
    """Live workers: every heartbeat key that has not expired, with its age."""
    values = [await reader.get(name) for name in await reader.scan(keys.heartbeat_pattern())]
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


async def breakers(reader: RuntimeReader, keys: Keys) -> dict[str, dict[str, str]]:
    """Shared circuit-breaker hashes (written by the policies), every field as text."""
    head = keys.breaker("")
    out = {}
    for key in await reader.scan(keys.breaker("*")):
        fields = await reader.hash(key)
        if fields is not None:  # None: not a hash, someone else's key
            out[key[len(head) :]] = fields
    return out


def dlq_agent(keys: Keys, stream: str) -> str:
    return stream[len(keys.dlq("")) :]
