"""Worker liveness from heartbeat keys (``P:hb:AGENT:CONSUMER``, JSON, TTL of 3 beats): a
worker is live while its key exists; a key disappears when the worker stops or dies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.observability import inspect
from agent_runtime.observability.render import duration, table
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.transport.keys import Keys


@dataclass
class Health:
    workers: list[dict[str, Any]]
    expected: list[str]
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "expected_agents": self.expected,
            "missing_agents": self.missing,
            "workers": self.workers,
        }


async def check_all(reader: RuntimeReader, keys: Keys, expected: Iterable[str]) -> Health:
    """Live workers, and which of the ``expected`` agent types have none running (a worker
    that is draining after SIGTERM does not count)."""
    workers = await inspect.heartbeats(reader, keys)
    running = {str(w.get("agent")) for w in workers if not w.get("stopping")}
    wanted = sorted(set(expected))
    return Health(workers, wanted, [a for a in wanted if a not in running])


async def check_one(
    reader: RuntimeReader, keys: Keys, agent: str, consumer: str
) -> dict[str, Any] | None:
    """The heartbeat of one worker, or None when it is not live."""
    value = await reader.get(keys.heartbeat(agent, consumer))
    if value is None:
        return None
    try:
        beat = json.loads(value)
    except ValueError:
        return None
    return beat if isinstance(beat, dict) else None


def render_health(health: Health) -> str:
    rows = [
        [
            w.get("agent"),
            w.get("consumer"),
            w.get("pid"),
            w.get("host"),
            w.get("in_flight"),
            w.get("processed"),
            duration(w.get("age_s")),
            "stopping" if w.get("stopping") else "running",
        ]
        for w in health.workers
    ]
    lines = [
        table(
            ["AGENT", "CONSUMER", "PID", "HOST", "IN FLIGHT", "PROCESSED", "LAST BEAT", "STATE"],
            rows,
        )
        if rows
        else "  no live workers"
    ]
    if health.missing:
        lines.append(f"UNHEALTHY: no live worker for {', '.join(health.missing)}")
    else:
        lines.append(f"ok: every agent type has a live worker ({', '.join(health.expected)})")
    return "\n".join(lines)
