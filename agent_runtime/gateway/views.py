"""How the gateway shows a request: hops from its trace records, its state, report or failure
from its reply (the first decodable entry of its reply stream)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agent_runtime.approval import pending_approvals
from agent_runtime.codec import Codec, Decoded
from agent_runtime.errors import DecodeError
from agent_runtime.gateway.problems import Problem
from agent_runtime.limits import too_deep
from agent_runtime.observability.redaction import redact

#: Longest text of a hop field shown (a trace record is the runtime's own, but bounded anyway).
MAX_FIELD = 2_000
_HOP_TEXT = ("agent", "message_type", "outcome", "from_agent", "to_agent", "message_id", "reason")


def hop(index: int, record: bytes) -> dict[str, Any] | None:
    """Trace record number ``index`` as a hop: agent, message_type, outcome, duration_ms, at
    (ISO 8601, when the handler started), plus from/to agent, message id and reason; None when
    the record is not a JSON object (or nests too deep)."""
    if too_deep(record):
        return None
    try:
        data = json.loads(record)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {"index": index}
    for name in _HOP_TEXT:
        value = data.get(name)
        out[name] = None if value is None else str(value)[:MAX_FIELD]
    out["duration_ms"] = _number(data.get("duration_ms"))
    started = _number(data.get("started_ms"))
    out["at"] = (
        datetime.fromtimestamp(started / 1000, UTC).isoformat() if started is not None else None
    )
    return redact(out)  # type: ignore[no-any-return]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) < 1e15 else None  # no NaN, no inf


def hops(records: list[bytes], start: int = 0) -> list[dict[str, Any]]:
    return [h for i, r in enumerate(records, start) if (h := hop(i, r)) is not None]


def decode_reply(codec: Codec, fields: dict[bytes, bytes] | None, stream: str) -> Decoded | None:
    """The entry of ``stream`` decoded and verified for that stream (the MAC binds it), or
    None when there is none or it does not verify."""
    if fields is None:
        return None
    try:
        return codec.decode(fields, stream)
    except DecodeError:
        return None


def outcome(reply: Decoded) -> dict[str, Any]:
    """``{"state", "report", "failure"}`` of a terminal reply: ``request.failed`` gives its
    status (failed, timeout, rejected, cancelled) and the failure; a report that says whether
    it succeeded (``ok``) gives succeeded or its own status; any other reply is a success."""
    data = reply.payload.model_dump(mode="json")
    if reply.message.message_type == "request.failed":
        return {"state": str(data.get("status", "failed")), "report": None, "failure": data}
    ok = getattr(reply.payload, "ok", None)
    if ok is None or ok is True:
        state = "succeeded"
    else:
        state = str(data.get("status") or "failed")
    return {"state": state, "report": data, "failure": None}


def request_view(
    cid: str, records: list[bytes], reply: Decoded | None, waiting: bool = False
) -> dict[str, Any]:
    """The body of ``GET /v1/requests/{cid}``."""
    end = outcome(reply) if reply is not None else None
    state = end["state"] if end else ("waiting_approval" if waiting else "running")
    return {
        "correlation_id": cid,
        "state": state,
        "hops": hops(records),
        "report": end["report"] if end else None,
        "failure": end["failure"] if end else None,
    }


async def load_view(rt: Any, cid: str, *, must_exist: bool = True) -> dict[str, Any]:
    records = await rt.traces.records(cid)
    reply_stream = rt.keys.reply(cid)
    reply = decode_reply(
        rt.client.codec, entry_fields(await rt.store.first_entry(reply_stream)), reply_stream
    )
    waiting = False
    if reply is None:
        waiting = bool(await pending_approvals(rt.client.state, rt.keys, cid))
    if must_exist and not records and reply is None and not waiting:
        raise Problem(404, f"no request {cid} (unknown id, or its trace and reply expired)")
    return request_view(cid, records, reply, waiting)


def entry_fields(entry: Any) -> dict[bytes, bytes] | None:
    return None if entry is None else entry[1]
