"""safety_checker: the policy gate. ``plan.created`` -> ``plan.verdict`` (approved, rejected
with reasons, or needs_approval) and ``approval.decision`` -> ``approval.resolved``.

It alone holds the approval private key (agent_runtime.approval): it signs every step it lets
through, for the exact task the router will send (agents/approvals.py). Steps that need a
human are not signed: they are recorded in the request's approval hash (with a TTL), each
sealed by this agent's key, for ``agent-runtime approve/reject``. A human approval that
arrives in time is signed only for a record whose seal holds (tampered args are never signed)
and whose step still passes the policy, re-run on exactly those args. Expiries are on the
Redis server's clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from agent_runtime.agent import Agent, MessageContext
from agent_runtime.approval import APPROVAL_STATE, PRIVATE_KEY_ENV, ApprovalSigner, signer
from agent_runtime.config.model import config_path
from agent_runtime.errors import Skip
from agents import approvals
from agents.common import finish
from agents.policy import SafetyPolicy, evaluate, load_policy, step_problems
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
    policy: SafetyPolicy | None = Field(
        default=None, description="inline policy; wins over the file"
    )
    approval_valid_for: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="seconds a signed approval stays valid at most (the request's deadline "
        "ends it sooner), on the Redis server's clock",
    )

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
    def rules(self) -> SafetyPolicy:
        assert self.policy is not None
        return self.policy


class SafetyChecker(Agent[SafetyCheckerConfig]):
    Config = SafetyCheckerConfig
    consumes = (Plan, ApprovalDecision)
    produces = (SafetyVerdict, ApprovalResolution, Outcome)
    secrets: ClassVar[tuple[str, ...]] = (PRIVATE_KEY_ENV,)

    _signer: ApprovalSigner | None = None

    async def start(self) -> None:
        self.signer  # noqa: B018 - fail at start, not at the first plan, when no key is set

    @property
    def signer(self) -> ApprovalSigner:
        if self._signer is None:
            self._signer = signer()
        return self._signer

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
        now = await self.runtime.clock.now()
        valid_until = approvals.expiry(ctx.message, now, self.config.approval_valid_for)
        signed = [
            self.approve(cid, s, POLICY_APPROVER, valid_until)
            for s in plan.steps
            if s.id not in verdict.awaiting
        ]
        if not verdict.awaiting:
            ctx.send(SafetyVerdict(decision="approved", plan=plan, approvals=signed))
            return
        expires = round(now + policy.approval_ttl, 3)
        await self._record_pending(cid, [plan.step(i) for i in verdict.awaiting], expires)
        ctx.log.info("plan_awaits_approval", steps=verdict.awaiting)
        ctx.send(
            SafetyVerdict(
                decision="needs_approval",
                plan=plan,
                approvals=signed,
                awaiting_approval=verdict.awaiting,
                approval_expires_at=approvals.as_datetime(expires),
                reasons=[f"step {i} needs human approval" for i in verdict.awaiting],
            )
        )

    def approve(self, cid: str, step: PlanStep, approver: str, expires_at: float) -> StepApproval:
        return approvals.issue(self.signer, cid, step, approver, expires_at)

    async def _record_pending(self, cid: str, steps: list[PlanStep], expires: float) -> None:
        """Each record sealed by this agent's key. A redelivered plan rewrites the hash (with
        the expiry of that handling)."""
        key = self.runtime.keys.request_state(cid, APPROVAL_STATE)
        fields = {s.id: approvals.sealed_record(self.signer, cid, s, expires) for s in steps}
        ttl = max(int(expires - await self.runtime.clock.now()) + 60, 60)
        await self.runtime.state.hash_put(key, fields, ttl)

    # ------------------------------------------------------------------ human decisions
    async def decide(self, ctx: MessageContext, decision: ApprovalDecision) -> None:
        """Sign what the human approved, from the sealed records only, after the policy
        passes again on exactly those args; a record whose seal fails is rejected."""
        cid = str(ctx.message.correlation_id)
        now = await self.runtime.clock.now()
        live, refused = self._live(cid, await self._pending(cid, decision), now)
        if not live and not refused:
            ctx.log.info("approval_not_pending", steps=decision.steps or "all")
            raise Skip
        approver = f"human:{decision.approver}"
        if decision.approved:
            policy = self.config.rules
            for sid, step in list(live.items()):
                problems = step_problems(policy, step)
                if problems:
                    refused[sid] = f"step {sid} fails the policy now: {'; '.join(problems)}"
                    del live[sid]
            valid_until = approvals.expiry(ctx.message, now, self.config.approval_valid_for)
            signed = [self.approve(cid, s, approver, valid_until) for s in live.values()]
            resolution = ApprovalResolution(
                approvals=signed, approver=approver, comment=decision.comment
            )
        else:
            resolution = ApprovalResolution(
                rejected=sorted(live), approver=approver, comment=decision.comment
            )
        ctx.log.info("approval_decided", approved=decision.approved, steps=sorted(live))
        if live:
            ctx.send(resolution)
        if refused:
            ctx.log.warning("approval_refused", reasons=sorted(refused.values()))
            ctx.send(
                ApprovalResolution(
                    rejected=sorted(refused),
                    approver="safety_checker",
                    comment="; ".join(refused[s] for s in sorted(refused)),
                )
            )

    def _live(
        self, cid: str, pending: dict[str, bytes], now: float
    ) -> tuple[dict[str, PlanStep], dict[str, str]]:
        """(steps still waiting, from their sealed records; step -> why its record is refused)."""
        live: dict[str, PlanStep] = {}
        refused: dict[str, str] = {}
        for sid, raw in pending.items():
            opened = approvals.unseal(self.signer, cid, sid, raw)
            if isinstance(opened, str):
                refused[sid] = f"step {sid} is not signed: {opened}"
            elif opened[1] > now:
                live[sid] = opened[0]
        return live, refused

    async def _pending(self, cid: str, decision: ApprovalDecision) -> dict[str, bytes]:
        raw = await self.runtime.state.hash_get_all(
            self.runtime.keys.request_state(cid, APPROVAL_STATE)
        )
        return {k: v for k, v in raw.items() if not decision.steps or k in decision.steps}
