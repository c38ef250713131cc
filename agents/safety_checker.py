"""safety_checker: the policy gate. ``plan.created`` -> ``plan.verdict`` (approved, rejected
with reasons, or needs_approval) and ``approval.decision`` -> ``approval.resolved``.

It signs every step it lets through (agent_runtime.approval) with the key only it and the
executors hold. Steps that need a human are not signed: they are recorded in the request's
approval hash (with a TTL) for ``agent-runtime approve/reject``; a human approval that arrives
in time is signed with the approver's name.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from agent_runtime.agent import Agent, MessageContext
from agent_runtime.approval import APPROVAL_STATE, approval_key, sign
from agent_runtime.config.model import config_path
from agent_runtime.errors import Skip
from agents.common import finish
from agents.policy import Policy, evaluate, load_policy
from protocols.pipeline import (
    ApprovalDecision,
    ApprovalResolution,
    Outcome,
    Plan,
    PlanStep,
    SafetyVerdict,
    StepApproval,
)

POLICY_APPROVER = "policy"


class SafetyCheckerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_file: str | None = Field(
        default="configs/policy.yaml",
        description="policy YAML, relative to the pipeline config file (unset: "
        "configs/policy.yaml in the working directory)",
    )
    policy: Policy | None = Field(default=None, description="inline policy; wins over the file")

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("policy") is None:
            path = data.get("policy_file", "configs/policy.yaml")
            if path is None:
                raise ValueError("set policy_file or an inline policy")
            if "policy_file" in data and isinstance(path, str):
                path = config_path(path, info)  # an explicit path: relative to the config
            data = {**data, "policy_file": path, "policy": load_policy(Path(path))}
        return data

    @property
    def rules(self) -> Policy:
        assert self.policy is not None
        return self.policy


class SafetyChecker(Agent[SafetyCheckerConfig]):
    Config = SafetyCheckerConfig
    consumes = (Plan, ApprovalDecision)
    produces = (SafetyVerdict, ApprovalResolution, Outcome)

    _key: bytes | None = None

    async def start(self) -> None:
        self.key  # noqa: B018 - fail at start, not at the first plan, when no key is set

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = approval_key()
        return self._key

    async def handle(self, ctx: MessageContext) -> None:
        if isinstance(ctx.payload, Plan):
            await self.check(ctx, ctx.payload)
        else:
            assert isinstance(ctx.payload, ApprovalDecision)
            await self.decide(ctx, ctx.payload)

    # ------------------------------------------------------------------ plans
    async def check(self, ctx: MessageContext, plan: Plan) -> None:
        policy = self.config.rules
        verdict = evaluate(policy, plan, budget_usd=ctx.message.budget_usd)
        if verdict.rejections:
            ctx.log.info("plan_rejected", reasons=verdict.rejections)
            ctx.send(SafetyVerdict(decision="rejected", plan=plan, reasons=verdict.rejections))
            return
        if verdict.over_budget:
            finish(
                ctx,
                "budget_exceeded",
                plan.request,
                reasons=[verdict.over_budget],
                plan=plan,
                spend=plan.spend,
            )
            return
        cid = str(ctx.message.correlation_id)
        approvals = [
            self.approve(cid, s, POLICY_APPROVER)
            for s in plan.steps
            if s.id not in verdict.awaiting
        ]
        if not verdict.awaiting:
            ctx.send(SafetyVerdict(decision="approved", plan=plan, approvals=approvals))
            return
        expires = ctx.message.timestamp + timedelta(seconds=policy.approval_ttl)
        await self._record_pending(cid, [plan.step(i) for i in verdict.awaiting], expires)
        ctx.log.info("plan_awaits_approval", steps=verdict.awaiting)
        ctx.send(
            SafetyVerdict(
                decision="needs_approval",
                plan=plan,
                approvals=approvals,
                awaiting_approval=verdict.awaiting,
                approval_expires_at=expires,
                reasons=[f"step {i} needs human approval" for i in verdict.awaiting],
            )
        )

    def approve(self, cid: str, step: PlanStep, approver: str) -> StepApproval:
        signature = sign(
            self.key,
            correlation_id=cid,
            step_id=step.id,
            tool=step.tool,
            args=step.args,
            approver=approver,
        )
        return StepApproval(step_id=step.id, approver=approver, signature=signature)

    async def _record_pending(self, cid: str, steps: list[PlanStep], expires: datetime) -> None:
        """Idempotent (same fields, same values): a redelivered plan rewrites the same hash."""
        key = self.runtime.keys.request_state(cid, APPROVAL_STATE)
        fields = {
            s.id: json.dumps({"step": s.model_dump(mode="json"), "expires_at": expires.timestamp()})
            for s in steps
        }
        ttl = max(int(expires.timestamp() - time.time()) + 60, 60)
        await self.runtime.state.hash_put(key, fields, ttl)

    # ------------------------------------------------------------------ human decisions
    async def decide(self, ctx: MessageContext, decision: ApprovalDecision) -> None:
        cid = str(ctx.message.correlation_id)
        pending = await self._pending(cid)
        chosen = {
            sid: info
            for sid, info in pending.items()
            if not decision.steps or sid in decision.steps
        }
        now = datetime.now(UTC).timestamp()
        live = {sid: info for sid, info in chosen.items() if info["expires_at"] > now}
        if not live:
            ctx.log.info("approval_not_pending", steps=decision.steps or "all")
            raise Skip
        approver = f"human:{decision.approver}"
        if decision.approved:
            approvals = [
                self.approve(cid, PlanStep.model_validate(info["step"]), approver)
                for info in live.values()
            ]
            resolution = ApprovalResolution(
                approvals=approvals, approver=approver, comment=decision.comment
            )
        else:
            resolution = ApprovalResolution(
                rejected=sorted(live), approver=approver, comment=decision.comment
            )
        ctx.log.info("approval_decided", approved=decision.approved, steps=sorted(live))
        ctx.send(resolution)

    async def _pending(self, cid: str) -> dict[str, dict[str, Any]]:
        raw = await self.runtime.state.hash_get_all(
            self.runtime.keys.request_state(cid, APPROVAL_STATE)
        )
        return {k: json.loads(v) for k, v in raw.items()}
