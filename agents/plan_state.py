"""The router's plan DAG state and its transitions (pure logic, no Redis).

Step statuses::

    pending ──> dispatched ──> succeeded | failed | refused
    awaiting_approval ──> pending (approved) | rejected (rejected or expired)
    pending/awaiting ──> skipped (a dependency did not succeed) | cancelled (budget spent)

A transition returns :class:`Effects`: the steps that just became dispatched and whether the
plan just finished. Each step moves to ``dispatched`` in exactly one transition, which is what
makes double dispatch impossible once transitions are applied atomically (agents.router).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from protocols.pipeline import (
    ApprovalResolution,
    OutcomeStatus,
    Plan,
    SafetyVerdict,
    Spend,
    StepApproval,
    StepResult,
)

OPEN = frozenset({"pending", "awaiting_approval"})
DONE = frozenset({"succeeded", "failed", "refused", "skipped", "rejected", "cancelled"})


class Effects(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dispatch: list[str] = Field(default_factory=list)
    finished: bool = False
    timer: bool = False

    def __bool__(self) -> bool:
        return bool(self.dispatch or self.finished or self.timer)


class PlanState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Plan
    status: dict[str, str]
    approvals: dict[str, StepApproval] = Field(default_factory=dict)
    results: dict[str, StepResult] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    spend: Spend = Field(default_factory=Spend)
    budget_usd: float | None = None
    expires_at: datetime | None = None
    timer: str | None = None  # the approval timer's name in the router's schedule
    budget_hit: bool = False
    outcome: OutcomeStatus | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(cls, verdict: SafetyVerdict, budget_usd: float | None) -> tuple[PlanState, Effects]:
        awaiting = set(verdict.awaiting_approval)
        state = cls(
            plan=verdict.plan,
            spend=verdict.plan.spend,
            budget_usd=budget_usd,
            status={
                s.id: "awaiting_approval" if s.id in awaiting else "pending"
                for s in verdict.plan.steps
            },
            approvals={a.step_id: a for a in verdict.approvals},
            expires_at=verdict.approval_expires_at,
        )
        effects = state.advance()
        effects.timer = bool(awaiting) and not effects.finished
        return state, effects

    # ------------------------------------------------------------------ transitions
    def record(self, result: StepResult) -> Effects:
        if self.outcome is not None or self.status.get(result.step_id) != "dispatched":
            return Effects()  # late, unknown or repeated: never counted twice
        self.status[result.step_id] = result.status
        self.results[result.step_id] = result
        self.spend = self.spend.add(cost_usd=result.cost_usd)
        if result.status != "succeeded":
            self._skip_dependents(result.step_id)
        if result.status == "cancelled":  # the executor found the budget spent
            self._cancel_open(result.error or "request budget exceeded")
        if self.budget_usd is not None and self.spend.cost_usd > self.budget_usd + 1e-12:
            self._cancel_open(
                f"spent ${self.spend.cost_usd:.6f} of the request budget "
                f"${self.budget_usd:.6f}; remaining steps cancelled"
            )
        return self.advance()

    def resolve(self, resolution: ApprovalResolution) -> Effects:
        for approval in resolution.approvals:
            if self.status.get(approval.step_id) == "awaiting_approval":
                self.status[approval.step_id] = "pending"
                self.approvals[approval.step_id] = approval
        rejected = [s for s in resolution.rejected if self.status.get(s) == "awaiting_approval"]
        for step_id in rejected:
            self._reject(
                step_id,
                f"step {step_id} was rejected by {resolution.approver}"
                + (f": {resolution.comment}" if resolution.comment else ""),
            )
        return self.advance()

    def expire(self, steps: list[str]) -> Effects:
        for step_id in steps:
            if self.status.get(step_id) == "awaiting_approval":
                self._reject(step_id, f"approval of step {step_id} expired")
        return self.advance()

    def advance(self) -> Effects:
        """Dispatch every pending step whose dependencies all succeeded; finish when no step
        is open or running."""
        if self.outcome is not None:
            return Effects()
        ready = [
            s.id
            for s in self.plan.steps
            if self.status[s.id] == "pending"
            and all(self.status[d] == "succeeded" for d in s.depends_on)
        ]
        for step_id in ready:
            self.status[step_id] = "dispatched"
        if any(v in OPEN or v == "dispatched" for v in self.status.values()):
            return Effects(dispatch=ready)
        self.outcome = self._overall()
        return Effects(dispatch=ready, finished=True)

    def awaiting(self) -> list[str]:
        return [s for s, v in self.status.items() if v == "awaiting_approval"]

    # ------------------------------------------------------------------ helpers
    def _overall(self) -> OutcomeStatus:
        values = set(self.status.values())
        if self.budget_hit:
            return "budget_exceeded"
        if "rejected" in values:
            return "rejected"
        if values <= {"succeeded"}:
            return "succeeded"
        return "failed"

    def _reject(self, step_id: str, reason: str) -> None:
        self.status[step_id] = "rejected"
        self.reasons.append(reason)
        self._skip_dependents(step_id)

    def _skip_dependents(self, failed: str) -> None:
        blocked = {failed}
        changed = True
        while changed:  # to a fixed point: plan order need not be topological
            changed = False
            for step in self.plan.steps:
                if self.status[step.id] in OPEN and blocked & set(step.depends_on):
                    self.status[step.id] = "skipped"
                    blocked.add(step.id)
                    changed = True

    def _cancel_open(self, reason: str) -> None:
        if self.budget_hit:
            return
        self.budget_hit = True
        self.reasons.append(reason)
        for step_id, value in self.status.items():
            if value in OPEN:
                self.status[step_id] = "cancelled"
