"""Signed step approvals: what the safety checker signs and every executor verifies.

An approval is an HMAC-SHA256, keyed by ``AGENT_RUNTIME_APPROVAL_KEY``, over the canonical JSON
of ``[correlation_id, step_id, tool, args, approver]`` (sorted keys, no whitespace). A task
whose signature is missing, forged, or made for another request, step, tool, argument or
approver is refused. ``run`` and ``up`` generate a random key for their children when none is
set (:func:`ensure_key`); a standalone worker without a key refuses to start.

Pending human approvals of a request live in the hash ``keys.request_state(cid, "approval")``
(field: step id, value: JSON of tool, args, risk, reasons, expires_at) with a TTL, written by
the safety checker and cleared by the router as steps are decided or expire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent_runtime.errors import ConfigError, RequestError
from agent_runtime.limits import too_deep
from agent_runtime.schedule import Scheduled
from agent_runtime.transport.keys import Keys

if TYPE_CHECKING:
    from agent_runtime.client import Client
    from agent_runtime.transport.base import State

APPROVAL_KEY_ENV = "AGENT_RUNTIME_APPROVAL_KEY"
APPROVAL_STATE = "approval"
#: The message type of a human decision (``agent-runtime approve/reject``); its payload model
#: is the pipeline's (the default pipeline: protocols.pipeline.ApprovalDecision).
DECISION_TYPE = "approval.decision"
MIN_KEY_LENGTH = 16
#: The router's approval timer (its schedule lists the requests waiting for a human).
TIMER_TYPE = "approval.timer"
#: A pending-approval record longer than this is not parsed.
MAX_RECORD_BYTES = 256 * 1024
#: Requests listed at most by :func:`waiting_approvals` (earliest expiry first).
LIST_LIMIT = 1_000


def approval_key(env: MutableMapping[str, str] | None = None) -> bytes:
    """The signing key from the environment, or a ConfigError saying how to set one."""
    value = (os.environ if env is None else env).get(APPROVAL_KEY_ENV, "")
    if len(value) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{APPROVAL_KEY_ENV} must be set to a secret of at least "
            f"{MIN_KEY_LENGTH} characters (the safety checker signs approvals "
            "with it, executors verify them); 'agent-runtime run' and 'up' "
            "generate one for their workers"
        )
    return value.encode()


def ensure_key(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Give ``env`` a random approval key unless it has one (embedded/dev runs)."""
    if len(env.get(APPROVAL_KEY_ENV, "")) < MIN_KEY_LENGTH:
        env[APPROVAL_KEY_ENV] = secrets.token_hex(32)
    return env


def child_env() -> dict[str, str]:
    """The approval key for worker processes: ours, or a fresh random one (embedded/dev)."""
    return {APPROVAL_KEY_ENV: ensure_key(dict(os.environ))[APPROVAL_KEY_ENV]}


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign(
    key: bytes, *, correlation_id: str, step_id: str, tool: str, args: dict[str, Any], approver: str
) -> str:
    material = canonical([correlation_id, step_id, tool, args, approver])
    return hmac.new(key, material, hashlib.sha256).hexdigest()


def verify(
    key: bytes,
    signature: str,
    *,
    correlation_id: str,
    step_id: str,
    tool: str,
    args: dict[str, Any],
    approver: str,
) -> bool:
    expected = sign(
        key, correlation_id=correlation_id, step_id=step_id, tool=tool, args=args, approver=approver
    )
    return hmac.compare_digest(expected, signature)


async def pending_approvals(
    state: State, keys: Keys, correlation_id: str, *, now: float | None = None
) -> dict[str, Any]:
    """Steps of a request still waiting for a human at ``now`` (epoch seconds; pass the
    server's time, default: the local clock): step id -> {step, expires_at}. A record that is
    not one the safety checker wrote is left out."""
    raw = await state.hash_get_all(keys.request_state(correlation_id, APPROVAL_STATE))
    now = time.time() if now is None else now
    pending = {k: _record(v) for k, v in raw.items()}
    return {k: v for k, v in pending.items() if v is not None and v["expires_at"] > now}


def _record(raw: bytes) -> dict[str, Any] | None:
    """A pending-approval record (JSON ``{step, expires_at}``), or None if it is not one."""
    if len(raw) > MAX_RECORD_BYTES or too_deep(raw):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("step"), dict):
        return None
    expires = value.get("expires_at")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    return {**value, "expires_at": float(expires)}


async def submit_decision(
    client: Client,
    correlation_id: str,
    *,
    approved: bool,
    steps: list[str],
    approver: str,
    comment: str = "",
) -> list[str]:
    """Send a human decision to the safety checker; returns the steps it covers. Raises
    RequestError when nothing (or not a named step) of the request is waiting."""
    try:
        cid = uuid.UUID(correlation_id)
    except ValueError as exc:
        raise RequestError(f"{correlation_id!r} is not a correlation id (a UUID)") from exc
    schemas = client.pipeline.schemas
    if DECISION_TYPE not in schemas:
        raise RequestError(f"this pipeline takes no {DECISION_TYPE!r} messages (no approvals)")
    from agent_runtime.cancel import cancellation  # cancel.py imports this module

    cancelled = await cancellation(client.state, client.keys, str(cid))
    if cancelled is not None:
        raise RequestError(f"request {cid} was {cancelled.text()}; nothing to decide")
    now = await client.clock.now()  # expiry on the server's clock
    pending = await pending_approvals(client.state, client.keys, str(cid), now=now)
    if not pending:
        raise RequestError(
            f"no step of request {cid} is waiting for approval (unknown "
            "request, already decided, finished, or the approval expired)"
        )
    unknown = sorted(set(steps) - set(pending))
    if unknown:
        raise RequestError(
            f"steps {unknown} of request {cid} are not waiting for approval; "
            f"waiting: {sorted(pending)}"
        )
    decision = schemas.current(DECISION_TYPE).model_validate(
        {"approved": approved, "steps": steps, "approver": approver, "comment": comment}
    )
    await client.send(client.new_message(decision, correlation_id=cid))
    return sorted(steps or pending)


@dataclass(frozen=True, slots=True)
class WaitingStep:
    """A step waiting for a human decision (``agent-runtime approvals``)."""

    correlation_id: str
    step_id: str
    tool: str
    args: dict[str, Any]
    risk: str
    expires_at: float  # server epoch seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "step": self.step_id,
            "tool": self.tool,
            "args": self.args,
            "risk": self.risk,
            "expires_at": datetime.fromtimestamp(self.expires_at, UTC).isoformat(),
        }


async def waiting_approvals(client: Client, *, limit: int = LIST_LIMIT) -> list[WaitingStep]:
    """Every step waiting for a human, earliest expiry first. The requests are those with an
    approval timer in the schedule of an agent type that consumes ``approval.timer`` (the
    router: it starts one as soon as it takes a plan that waits), their steps those of the
    request's pending-approval hash that have not expired on the server's clock."""
    now = await client.clock.now()
    cids: dict[str, None] = {}
    for agent in client.pipeline.agents.values():
        if TIMER_TYPE not in agent.consumes:
            continue
        for member, _ in await client.transport.schedule.members(agent.name, limit):
            spec = Scheduled.parse(member)
            if spec is not None and spec.message_type == TIMER_TYPE:
                cids[str(spec.correlation_id)] = None
    rows = []
    for cid in list(cids)[:limit]:
        pending = await pending_approvals(client.state, client.keys, cid, now=now)
        rows += [_waiting(cid, step_id, info) for step_id, info in pending.items()]
    return sorted(rows, key=lambda r: (r.expires_at, r.correlation_id, r.step_id))


def _waiting(cid: str, step_id: str, info: dict[str, Any]) -> WaitingStep:
    step = info["step"]
    args = step.get("args")
    return WaitingStep(
        correlation_id=cid,
        step_id=step_id,
        tool=str(step.get("tool", "?")),
        args=args if isinstance(args, dict) else {},
        risk=str(step.get("risk", "?")),
        expires_at=info["expires_at"],
    )
