"""``agent-runtime status``: one snapshot of the whole runtime, as data and as text."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from agent_runtime.config.limits import AccountLimits, MessageLimits
from agent_runtime.observability import inspect
from agent_runtime.observability.render import duration, table
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.ratelimit import RedisRateLimits, meter_keys


async def collect_status(
    reader: RuntimeReader,
    letters: DeadLetterStore,
    keys: Keys,
    inboxes: Iterable[str] = (),
    limits: Mapping[str, AccountLimits | MessageLimits] | None = None,
) -> dict[str, Any]:
    """Streams (inboxes, reports), dead letters, breakers, the fleet rate limits ``limits``
    (the pipeline's ``llm.accounts``) and live workers under ``keys``. ``inboxes`` adds
    configured inboxes that may not exist yet (shown with length 0)."""
    found = set(await reader.scan(keys.inbox_pattern(), "stream"))
    names = sorted(found | set(inboxes))
    streams = [await inspect.stream_view(reader, name) for name in names]
    if await reader.exists(keys.reports()):
        streams.append(await inspect.stream_view(reader, keys.reports()))
    dlqs = [await inspect.dead_letter_view(letters, name) for name in await letters.streams()]
    return {
        "at": time.time(),
        "prefix": keys.prefix,
        "streams": streams,
        "dead_letters": dlqs,
        "breakers": await inspect.breakers(reader, keys),
        "rate_limits": await rate_limit_views(reader, keys, limits or {}),
        "workers": await inspect.heartbeats(reader, keys),
    }


def render_status(status: dict[str, Any]) -> str:
    parts = [f"agent-runtime status (prefix {status['prefix']!r})", "", "Streams"]
    parts.append(_streams_table(status["streams"]) if status["streams"] else "  (none)")
    consumers = _consumers_table(status["streams"])
    if consumers:
        parts += ["", "Consumers", consumers]
    parts += ["", "Dead letters"]
    parts.append(_dlq_table(status["dead_letters"]) if status["dead_letters"] else "  (none)")
    parts += ["", "Breakers"]
    parts.append(_breakers_text(status["breakers"]) if status["breakers"] else "  (none)")
    if status.get("rate_limits"):
        parts += ["", "Rate limits", _rate_limits_table(status["rate_limits"])]
    parts += ["", f"Workers ({len(status['workers'])} live)"]
    parts.append(_workers_table(status["workers"]) if status["workers"] else "  (none)")
    return "\n".join(parts)


async def rate_limit_views(
    reader: RuntimeReader, keys: Keys, limits: Mapping[str, AccountLimits | MessageLimits]
) -> list[dict[str, Any]]:
    """Per limit: what each meter holds now (calls running or ended within the window) against
    its limit, and the fleet's waits so far (calls that waited, their total wait, refusals)."""
    store = RedisRateLimits(reader.redis)
    views = []
    for name, spec in sorted(limits.items()):
        meters = spec.meters()
        _now, usage = await store.usage(
            meter_keys(keys, name, [m for m, _ in meters]), int(spec.window_seconds * 1000)
        )
        stats = await store.stats(keys.rate_limit(name, "stats"))
        views.append(
            {
                "limit": name,
                "provider": getattr(spec, "provider", "-"),
                "window_s": spec.window_seconds,
                "meters": {
                    meter: {"used": weight, "calls": calls, "limit": limit}
                    for (meter, limit), (calls, weight) in zip(meters, usage, strict=True)
                },
                "waited": stats.get("waited", 0),
                "wait_s_total": stats.get("wait_ms", 0) / 1000,
                "refused_deadline": stats.get("refused_deadline", 0),
                "refused_too_large": stats.get("refused_too_large", 0),
            }
        )
    return views


def _rate_limits_table(limits: list[dict[str, Any]]) -> str:
    def meter(view: dict[str, Any], *names: str) -> str:
        found = next((view["meters"][n] for n in names if n in view["meters"]), None)
        return "-" if found is None else f"{found['used']}/{found['limit']}"

    rows = [
        [
            v["limit"],
            v["provider"],
            meter(v, "requests", "messages"),
            meter(v, "tokens"),
            duration(v["window_s"]),
            v["waited"],
            duration(v["wait_s_total"] / v["waited"]) if v["waited"] else "-",
            v["refused_deadline"] + v["refused_too_large"],
        ]
        for v in limits
    ]
    return table(
        ["LIMIT", "PROVIDER", "REQUESTS", "TOKENS", "WINDOW", "WAITED", "AVG WAIT", "REFUSED"], rows
    )


def _streams_table(streams: list[dict[str, Any]]) -> str:
    rows = []
    for stream in streams:
        groups = stream["groups"] or [None]
        for group in groups:
            if group is None:
                rows.append([stream["stream"], stream["length"], "-", None, None, None, None])
                continue
            rows.append(
                [
                    stream["stream"],
                    stream["length"],
                    group["group"],
                    group["lag"],
                    group["pending"],
                    duration(group["oldest_pending_age_s"]),
                    len(group["consumers"]),
                ]
            )
    return table(
        ["STREAM", "LENGTH", "GROUP", "LAG", "PENDING", "OLDEST PENDING", "CONSUMERS"], rows
    )


def _consumers_table(streams: list[dict[str, Any]]) -> str:
    rows = [
        [
            s["stream"],
            g["group"],
            c["consumer"],
            c["pending"],
            duration(c["idle_s"]),
            duration(c["inactive_s"]),
        ]
        for s in streams
        for g in s["groups"]
        for c in g["consumers"]
    ]
    if not rows:
        return ""
    return table(["STREAM", "GROUP", "CONSUMER", "PENDING", "IDLE", "INACTIVE"], rows)


def _dlq_table(dlqs: list[dict[str, Any]]) -> str:
    rows = [
        [
            d["stream"],
            d["length"],
            ", ".join(f"{reason}={n}" for reason, n in d["by_reason"].items()) or "-",
            duration(d["oldest_age_s"]),
        ]
        for d in dlqs
    ]
    return table(["STREAM", "LENGTH", "BY REASON", "OLDEST"], rows)


def _breakers_text(breakers: dict[str, dict[str, str]]) -> str:
    lines = []
    for name, fields in sorted(breakers.items()):
        state = fields.get("state", "?")
        rest = " ".join(f"{k}={v}" for k, v in fields.items() if k != "state")
        lines.append(f"  {name}: {state}" + (f"  ({rest})" if rest else ""))
    return "\n".join(lines)


def _workers_table(workers: list[dict[str, Any]]) -> str:
    rows = [
        [
            w.get("agent"),
            w.get("consumer"),
            w.get("pid"),
            w.get("host"),
            w.get("in_flight"),
            w.get("processed"),
            duration(time.time() - float(w["started_at"])) if w.get("started_at") else None,
            duration(w.get("age_s")),
            "stopping" if w.get("stopping") else "running",
        ]
        for w in workers
    ]
    return table(
        ["AGENT", "CONSUMER", "PID", "HOST", "IN FLIGHT", "PROCESSED", "UP", "LAST BEAT", "STATE"],
        rows,
    )
