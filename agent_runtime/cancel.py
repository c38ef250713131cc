"""Cancelling a request (``agent-runtime cancel CID [--reason]``) and the checks agents make.

:func:`cancel_request` runs one script on the request's slot (transport/cancel.py) that, only
if the request is known and has no terminal reply yet:

* sets the outcome guard and writes the requester's terminal reply, ``request.failed`` with
  status and code ``cancelled`` and the reason naming who cancelled -- the same guard every
  terminal reply goes through, so a report committed later is not written;
* records the cancellation in ``P:req:{CID}:cancel`` (JSON: by, reason, at);
* appends a ``cancelled`` record to the request's trace (who, why);
* deletes the request's pending approvals (nothing is waiting for a human any more).

Agents then stop the request: the router dispatches nothing more for it and drops its
approval timer; an executor checks the mark **atomically** before it starts a tool
(:func:`start_tool`: an optimistic transaction on the mark, which also writes ``open``, so a
cancel recorded between the check and the start makes the transaction fail and the check run
again). Either the tool started before the cancel was recorded -- it is in flight, and the
executor cancels it when the tool allows -- or it never starts. No tool starts after a cancel.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent_runtime.approval import APPROVAL_STATE
from agent_runtime.errors import RequestError
from agent_runtime.transport.cancel import CancelWrite, RedisCancels
from agent_runtime.transport.keys import Keys
from agent_runtime.worker.delivery import REPLY_TTL
from protocols.core import RequestFailed
from protocols.envelope import OUTPUT_ID_NAMESPACE, AgentMessage

if TYPE_CHECKING:
    from agent_runtime.client import Client
    from agent_runtime.transport.base import State

#: ``from_agent`` of the cancellation reply, ``agent`` of its trace record.
CANCEL_AGENT = "cancel"
#: The mark's value once a tool of the request started (before any cancel).
OPEN = b"open"
#: A mark longer than this is not parsed.
MAX_MARK_BYTES = 8 * 1024
MAX_REASON = 1_000


class CancelRefused(RequestError):
    """The request cannot be cancelled: unknown, or already finished (one line, exit 1)."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Who cancelled a request, why, and when (server epoch seconds)."""

    by: str
    reason: str
    at: float

    def encode(self) -> bytes:
        return json.dumps({"by": self.by, "reason": self.reason, "at": self.at}).encode()

    @classmethod
    def parse(cls, raw: bytes | None) -> Cancellation | None:
        """The cancellation a mark holds; None for no mark, ``open`` or anything else."""
        if not raw or raw == OPEN or len(raw) > MAX_MARK_BYTES or not raw.startswith(b"{"):
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("by"), str):
            return None
        at = data.get("at")
        return cls(
            data["by"],
            str(data.get("reason") or ""),
            float(at) if isinstance(at, int | float) else 0.0,
        )

    def text(self) -> str:
        return f"cancelled by {self.by}" + (f": {self.reason}" if self.reason else "")


async def cancellation(state: State, keys: Keys, correlation_id: str) -> Cancellation | None:
    """The request's cancellation, or None."""
    return Cancellation.parse(await state.get(keys.cancel(correlation_id)))


def _start(old: bytes | None) -> tuple[bytes | None, Cancellation | None]:
    cancelled = Cancellation.parse(old)
    return (None, cancelled) if cancelled is not None else (OPEN, None)


async def start_tool(
    state: State, keys: Keys, correlation_id: str, ttl: int
) -> Cancellation | None:
    """Before a tool of the request starts: its cancellation (do not start), or None after
    marking the request ``open`` in the same optimistic transaction (start it)."""
    result: Cancellation | None = await state.transact(keys.cancel(correlation_id), _start, ttl=ttl)
    return result


@dataclass(frozen=True, slots=True)
class CancelResult:
    correlation_id: str
    cancellation: Cancellation
    tools_started: bool  # a tool of it had started: in-flight calls are being cancelled


async def cancel_request(
    client: Client, correlation_id: str, *, by: str, reason: str = ""
) -> CancelResult:
    """Cancel a request (see the module docstring). Raises RequestError for an id that is not
    a UUID, :class:`CancelRefused` for an unknown or finished request."""
    try:
        cid = str(uuid.UUID(correlation_id))
    except ValueError as exc:
        raise RequestError(f"{correlation_id!r} is not a correlation id (a UUID)") from exc
    now = await client.clock.now()
    record = Cancellation(by[:100], reason[:MAX_REASON], now)
    keys = client.keys
    ttl = max(REPLY_TTL, int(client.pipeline.config.requests.deadline) + 3600)
    write = CancelWrite(
        correlation_id=cid,
        guard_value="request.failed:cancelled",
        ttl=ttl,
        record=record.encode(),
        trace_record=json.dumps(_trace_record(cid, record)).encode(),
        reply=dict(client.codec.encode(_reply(cid, record, keys), keys.reply(str(cid)))),
        approvals=keys.request_state(cid, APPROVAL_STATE),
    )
    status, detail = await RedisCancels(client.redis, keys).cancel(write)
    if status == 0:
        raise CancelRefused(
            f"request {cid} has already finished ({detail.decode('utf-8', 'replace')}); "
            "nothing to cancel"
        )
    if status == -2:
        raise CancelRefused(
            f"request {cid} is unknown (no trace, approval or deadline entry: a wrong id, "
            "or it expired)"
        )
    if status == -1:
        raise CancelRefused(f"request {cid}: its reply key holds another type; not cancelled")
    return CancelResult(cid, record, tools_started=detail == OPEN)


def _reply(cid: str, record: Cancellation, keys: Keys) -> AgentMessage:
    payload = RequestFailed(
        status="cancelled", reason=record.text()[:2_000], agent=CANCEL_AGENT, code="cancelled"
    )
    return AgentMessage(
        message_id=uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{cid}:cancel"),
        correlation_id=uuid.UUID(cid),
        from_agent=CANCEL_AGENT,
        to_agent="client",
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        payload=payload.model_dump(mode="json"),
        timestamp=datetime.fromtimestamp(record.at, UTC),
        reply_to=keys.reply(cid),
    )


def _trace_record(cid: str, record: Cancellation) -> dict[str, Any]:
    """The trace's ``cancelled`` record: who cancelled and why (``agent-runtime trace``)."""
    ms = int(record.at * 1000)
    return {
        "agent": CANCEL_AGENT,
        "outcome": "cancelled",
        "reason": record.text(),
        "message_id": str(uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{cid}:cancel")),
        "correlation_id": cid,
        "message_type": "request.failed",
        "from_agent": f"human:{record.by}",
        "to_agent": "client",
        "started_ms": ms,
        "finished_ms": ms,
        "duration_ms": 0,
        "delivery_count": 0,
    }
