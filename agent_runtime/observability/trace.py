"""``agent-runtime trace CID``: the life of one request, rebuilt from its trace list
(``keys.trace(cid)``: one JSON record per message, written by the client and by every
worker's commit) and from the dead-letter streams (entries carrying that correlation id)."""

from __future__ import annotations

import json
from typing import Any

from agent_runtime.limits import too_deep
from agent_runtime.observability import inspect
from agent_runtime.observability.render import duration, table
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.traces import TraceLog
from agent_runtime.worker.delivery import expand_trace

_INT_FIELDS = ("delivery_count", "started_ms", "finished_ms")


def _event(index: int, record: bytes) -> dict[str, Any] | None:
    fields = expand_trace(record)
    if not fields:
        return None
    event: dict[str, Any] = {k.decode(): inspect.text(v) for k, v in fields.items()}
    event["entry_id"] = str(index)  # the record's position in the trace list
    for name in _INT_FIELDS:
        event[name] = int(event[name]) if event.get(name, "").isdigit() else None
    try:
        event["duration_ms"] = float(event.get("duration_ms") or 0)
    except ValueError:
        event["duration_ms"] = None
    outputs = (event.get("outputs") or "[]").encode()
    try:
        event["outputs"] = [] if too_deep(outputs) else json.loads(outputs)
    except ValueError:
        event["outputs"] = []
    return event


async def load_trace(
    traces: TraceLog, store: DeadLetterStore, correlation_id: str
) -> list[dict[str, Any]]:
    """Every recorded step of the request, in time order, with dead letters attached."""
    records = await traces.records(correlation_id)
    events = [e for i, raw in enumerate(records) if (e := _event(i, raw)) is not None]
    letters = await _dead_letters_of(store, correlation_id)
    by_message = {e.get("message_id"): e for e in events if e.get("outcome") == "dead_lettered"}
    for letter in letters:
        event = by_message.get(letter["message_id"])
        if event is not None:
            event["dead_letter"] = letter
        else:  # the trace record is off, expired or missed this one: show the letter itself
            events.append(_letter_event(letter))
    events.sort(key=lambda e: (e.get("started_ms") or 0, e.get("finished_ms") or 0))
    return events


async def _dead_letters_of(store: DeadLetterStore, cid: str) -> list[dict[str, Any]]:
    out = []
    for dlq in await store.streams():
        for entry_id, fields in await store.entries(dlq):
            if inspect.text(fields.get(b"correlation_id")) != cid:
                continue
            out.append(
                {
                    "dlq": dlq,
                    "id": entry_id,
                    "agent": inspect.dlq_agent(store.keys, dlq),
                    "message_id": inspect.text(fields.get(b"message_id")),
                    "message_type": inspect.text(fields.get(b"message_type")),
                    "reason": inspect.text(fields.get(b"reason")),
                    "error": inspect.text(fields.get(b"error")),
                    "delivery_count": int(fields.get(b"delivery_count") or 0),
                    "failed_at_ms": int(fields.get(b"failed_at_ms") or 0),
                }
            )
    return out


def _letter_event(letter: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent": letter["agent"],
        "message_id": letter["message_id"],
        "message_type": letter["message_type"],
        "from_agent": "?",
        "to_agent": letter["agent"],
        "outcome": "dead_lettered",
        "reason": letter["reason"],
        "delivery_count": letter["delivery_count"],
        "started_ms": letter["failed_at_ms"],
        "finished_ms": letter["failed_at_ms"],
        "duration_ms": None,
        "outputs": [],
        "dead_letter": letter,
    }


def waiting(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages sent to an agent that no trace entry shows as finished yet (in an inbox or
    being handled right now, or lost from the record when traces are off)."""
    seen = {e.get("message_id") for e in events if e.get("outcome") != "published"}
    out = []
    for event in events:
        sent = list(event.get("outputs") or [])
        if event.get("outcome") == "published":
            sent = [
                {
                    "message_id": event.get("message_id"),
                    "message_type": event.get("message_type"),
                    "to": event.get("to_agent"),
                }
            ]
        out += [o for o in sent if o.get("to") != "client" and o.get("message_id") not in seen]
    return out


def render_trace(correlation_id: str, events: list[dict[str, Any]]) -> str:
    if not events:
        return (
            f"no trace for request {correlation_id} (unknown id, expired after the trace "
            "TTL, or traces are off)"
        )
    start = min(e["started_ms"] for e in events if e.get("started_ms") is not None)
    end = max(e.get("finished_ms") or start for e in events)
    rows = [
        [
            f"+{duration(((e.get('started_ms') or start) - start) / 1000)}",
            f"{e.get('from_agent', '?')} -> {e.get('to_agent', '?')}",
            e.get("message_type"),
            e.get("agent"),
            _ms(e.get("duration_ms")),
            e.get("delivery_count"),
            _outcome(e),
        ]
        for e in events
    ]
    lines = [
        f"request {correlation_id}: {len(events)} steps over {duration((end - start) / 1000)}",
        table(["AT", "FROM -> TO", "TYPE", "AGENT", "DURATION", "DELIVERIES", "OUTCOME"], rows),
    ]
    for event in events:
        letter = event.get("dead_letter")
        if letter:
            lines.append(
                f"  dead letter {letter['id']} in {letter['dlq']}: "
                f"[{letter['reason']}] {letter['error']}"
            )
    for item in waiting(events):
        lines.append(
            f"  waiting: {item.get('message_type')} {item.get('message_id')} "
            f"at {item.get('to')} (not finished yet)"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else duration(value / 1000)


def _outcome(event: dict[str, Any]) -> str:
    reason = event.get("reason")
    return f"{event.get('outcome')} ({reason})" if reason else str(event.get("outcome"))
