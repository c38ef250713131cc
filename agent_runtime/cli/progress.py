"""Live progress of ``agent-runtime run``, as text.

Progress lines come from the request's trace list (one JSON record per handled message,
written by the workers in their commit pipeline): time since publish, agent, message type,
what it produced, and how long the handler took.
"""

from __future__ import annotations

import json

from agent_runtime.worker.delivery import expand_trace


def hop_line(record: bytes, published_ms: int) -> str | None:
    """One trace record as a progress line (None for the client's own publish record, or a
    record that is not a JSON object)."""
    get = {k.decode(): v.decode(errors="replace") for k, v in expand_trace(record).items()}
    if not get:
        return None
    if get.get("outcome") == "published" and get.get("message_type") == "user.request":
        return None
    at = (int(get.get("finished_ms", published_ms) or published_ms) - published_ms) / 1000
    agent = get.get("agent", "?")
    outcome = get.get("outcome", "")
    if outcome == "published":
        return f"  +{at:6.2f}s  {agent:<15} published {get.get('message_type', '')}"
    try:
        outputs = json.loads(get.get("outputs") or "[]")
    except ValueError:
        outputs = []
    produced = ", ".join(sorted({f"{o.get('message_type')}->{o.get('to')}" for o in outputs}))
    duration = float(get.get("duration_ms") or 0)
    line = (
        f"  +{at:6.2f}s  {agent:<15} {get.get('message_type', ''):<18} "
        f"{duration:8.1f} ms  {outcome}"
    )
    if produced:
        line += f"  => {produced}"
    if get.get("reason"):
        line += f"  ({get['reason']})"
    return line
