"""Step approvals in the built-in pipeline: which task an approval is for, how the safety
checker issues one and seals what waits for a human, and how an executor checks and uses one
(the keys and signatures: agent_runtime/approval.py; the design: docs/security.md).

A task's identity is fixed before the task exists: the router sends the task of step S of
request C with message id :func:`task_message_id` (C, S) and idempotency key ``C:S``, so the
safety checker signs exactly the envelope the router will write. Each step is dispatched once
(the router's atomic transitions), so one approval covers one task envelope.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from agent_runtime.agent import AgentRuntime, MessageContext
from agent_runtime.approval import ApprovalSigner, ApprovalVerifier, Grant, args_digest
from agent_runtime.limits import too_deep
from protocols.envelope import AgentMessage
from protocols.pipeline import PlanStep, StepApproval, Task

#: Namespace of the router's task message ids (uuid5 of "CID:STEP").
TASK_IDS = uuid.UUID("0b7e4a52-6d1c-4f8e-9a3b-5c2d7e1f9a40")
#: Seconds a used-approval record outlives the approval's expiry.
USED_MARGIN = 60
USED_STATE = "approval-used:"


def task_message_id(correlation_id: str, step_id: str) -> uuid.UUID:
    """The message id of the task of step ``step_id``: the one the approval binds."""
    return uuid.uuid5(TASK_IDS, f"{correlation_id}:{step_id}")


def idempotency_key(correlation_id: str, step_id: str) -> str:
    """The tools' idempotency key of a step: the same step never acts twice."""
    return f"{correlation_id}:{step_id}"


def expiry(message: AgentMessage, now: float, valid_for: float) -> float:
    """When an approval issued now ends: ``valid_for`` seconds on, or the request's deadline
    if that comes first (epoch seconds, Redis server clock)."""
    end = now + valid_for
    if message.deadline is not None:
        end = min(end, message.deadline.timestamp())
    return round(end, 3)


def grant_for(
    correlation_id: str, step: PlanStep, approver: str, expires_at: float, *, key: str, message: str
) -> Grant:
    return Grant(
        correlation_id=correlation_id,
        step_id=step.id,
        tool=step.tool,
        args_sha256=_digest(step.args),
        idempotency_key=key,
        message_id=message,
        approver=approver,
        expires_at=round(expires_at, 3),
    )


def issue(
    signer: ApprovalSigner, correlation_id: str, step: PlanStep, approver: str, expires_at: float
) -> StepApproval:
    """The approval of the task the router will send for ``step``."""
    grant = grant_for(
        correlation_id,
        step,
        approver,
        expires_at,
        key=idempotency_key(correlation_id, step.id),
        message=str(task_message_id(correlation_id, step.id)),
    )
    return StepApproval(
        step_id=step.id,
        approver=approver,
        message_id=grant.message_id,
        idempotency_key=grant.idempotency_key,
        args_sha256=grant.args_sha256,
        expires_at=grant.expires_at,
        key_id=signer.key_id,
        signature=signer.sign(grant),
    )


def _digest(args: dict[str, Any]) -> str:
    try:
        return args_digest(args)
    except (TypeError, ValueError):  # NaN, infinities: no canonical form, never approved
        return "-"


# ---------------------------------------------------------------------- executor side
def problem(verifier: ApprovalVerifier, ctx: MessageContext, task: Task, now: float) -> str | None:
    """Why ``task`` may not run (None: its approval is valid for exactly this task, now)."""
    approval, step = task.approval, task.step
    if approval is None:
        return "the task carries no safety approval"
    message_id = str(ctx.message.message_id)
    for differs, what in (
        (approval.step_id != step.id, "another step"),
        (approval.args_sha256 != _digest(step.args), "other arguments"),
        (approval.idempotency_key != task.idempotency_key, "another idempotency key"),
        (approval.message_id != message_id, "another task message"),
    ):
        if differs:
            return f"the approval is for {what}"
    if approval.key_id not in verifier.keys:
        return f"the approval is signed by an unknown key {approval.key_id}"
    grant = grant_for(
        str(ctx.message.correlation_id),
        step,
        approval.approver,
        approval.expires_at,
        key=task.idempotency_key,
        message=message_id,
    )
    if not verifier.verify(grant, approval.key_id, approval.signature):
        return "the approval signature does not match this task"
    if now >= approval.expires_at:
        return f"the approval expired {now - approval.expires_at:.1f}s ago (Redis server clock)"
    return None


async def use(runtime: AgentRuntime, ctx: MessageContext, task: Task, now: float) -> str | None:
    """Record that this inbox entry uses the task's approval (``SET NX`` semantics, with a
    TTL past its expiry). The same entry again (a retry, a reclaim after a crash) may use it;
    any other entry is refused: why, or None."""
    assert task.approval is not None
    cid = str(ctx.message.correlation_id)
    key = runtime.keys.request_state(cid, USED_STATE + task.step.id)
    ref = f"{ctx.stream} {ctx.entry_id.decode(errors='replace')} {ctx.message.message_id}"
    ttl = max(1, math.ceil(task.approval.expires_at - now)) + USED_MARGIN

    def claim(old: bytes | None) -> tuple[bytes | None, bytes | None]:
        return (ref.encode(), None) if old is None else (None, old)

    holder = await runtime.state.transact(key, claim, ttl=ttl)
    if holder is None or holder == ref.encode():
        return None
    return f"the approval was already used (inbox entry {holder.decode(errors='replace')[:200]})"


# ---------------------------------------------------------------------- pending human approvals
def sealed_record(signer: ApprovalSigner, cid: str, step: PlanStep, expires_at: float) -> str:
    """The pending-approval hash value of ``step``: the step as the signed plan had it, its
    expiry, and the safety checker's seal over both (nobody else can make one)."""
    record = {"step": step.model_dump(mode="json"), "expires_at": expires_at}
    return json.dumps({**record, "seal": signer.seal([cid, record])})


def unseal(
    signer: ApprovalSigner, cid: str, step_id: str, raw: bytes
) -> tuple[PlanStep, float] | str:
    """The step and expiry of a pending record, or why it is not the safety checker's own
    (tampered, damaged, moved from another step or request)."""
    if len(raw) > 1 << 20 or too_deep(raw):
        return "the pending record is too large or too deep"
    try:
        data = json.loads(raw)
        record = {"step": data["step"], "expires_at": data["expires_at"]}
        seal = data["seal"]
    except (ValueError, TypeError, KeyError):
        return "the pending record is not readable"
    if not signer.unsealed([cid, record], seal):
        return "the pending record was altered after the safety checker wrote it"
    step = PlanStep.model_validate(record["step"])
    if step.id != step_id:
        return "the pending record belongs to another step"
    return step, float(record["expires_at"])


def as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
