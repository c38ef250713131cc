"""``GET /v1/status``: the fleet per agent type, built from ``agent-runtime status``'s
snapshot (agent_runtime/observability/status.py). ``msg_per_s`` is the change of the workers'
``processed`` counters since this process's previous snapshot (0 on the first)."""

from __future__ import annotations

import time
from typing import Any

from agent_runtime.observability.redaction import redact
from agent_runtime.observability.status import collect_status


class Throughput:
    """The previous snapshot's processed totals per agent type (this process's own)."""

    def __init__(self) -> None:
        self.last: tuple[float, dict[str, int]] | None = None

    def rates(self, totals: dict[str, int]) -> dict[str, float]:
        now = time.monotonic()
        previous, self.last = self.last, (now, totals)
        if previous is None or now - previous[0] <= 0:
            return dict.fromkeys(totals, 0.0)
        elapsed = now - previous[0]
        return {
            agent: round(max(total - previous[1].get(agent, 0), 0) / elapsed, 3)
            for agent, total in totals.items()
        }


async def fleet_status(runtime: Any, throughput: Throughput) -> dict[str, Any]:
    pipeline, keys = runtime.pipeline, runtime.keys
    inboxes = {name: pipeline.routing.inboxes(name) for name in pipeline.agents}
    snapshot = await collect_status(
        runtime.reader,
        runtime.dead_letters,
        keys,
        [s for streams in inboxes.values() for s in streams],
    )
    streams = {s["stream"]: s for s in snapshot["streams"]}
    dlqs = {d["stream"]: d for d in snapshot["dead_letters"]}
    breakers = {name: f.get("state", "?") for name, f in snapshot["breakers"].items()}
    totals: dict[str, int] = {}
    alive: dict[str, int] = {}
    for beat in snapshot["workers"]:
        agent = str(beat.get("agent"))
        alive[agent] = alive.get(agent, 0) + 1
        totals[agent] = totals.get(agent, 0) + int(beat.get("processed") or 0)
    rates = throughput.rates({name: totals.get(name, 0) for name in pipeline.agents})
    agents = []
    for name in pipeline.agents:
        groups = [
            g
            for stream in inboxes[name]
            for g in streams.get(stream, {}).get("groups", [])
            if g["group"] == keys.group(name)
        ]
        ages = [g["oldest_pending_age_s"] for g in groups if g["oldest_pending_age_s"] is not None]
        agents.append(
            {
                "agent": name,
                "workers_alive": alive.get(name, 0),
                "msg_per_s": rates.get(name, 0.0),
                "lag": sum(int(g["lag"] or 0) for g in groups),
                "pending": sum(int(g["pending"]) for g in groups),
                "oldest_pending_age_s": max(ages) if ages else None,
                "dead_letters": int(dlqs.get(keys.dlq(name), {}).get("length", 0)),
                "breakers": {
                    b: s for b, s in breakers.items() if b == name or b.startswith(f"{name}.")
                },
            }
        )
    return redact(  # type: ignore[no-any-return]
        {
            "at": snapshot["at"],
            "agents": agents,
            "breakers": breakers,
            "signing": {"enabled": bool(pipeline.config.signing), "warnings": pipeline.warnings()},
        }
    )
