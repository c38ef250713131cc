"""planner: ``intent.parsed`` -> ``plan.created``, a DAG of tool steps with a cost estimate.

The provider drafts the steps (:class:`~protocols.pipeline.PlanDraft`); the planner checks the
draft (known tools, unique ids, dependencies exist, no cycle) and assigns each step's risk and
cost estimate from its own tables, never from the model. A plan whose estimate is over the
request's budget ends here as ``budget_exceeded``: nothing has run yet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.agent import MessageContext
from agent_runtime.errors import LLMOutputError, LLMUnavailable
from agents.common import (
    LLMAgent,
    LLMAsk,
    ask_llm,
    budget_reason,
    finish,
    llm_unavailable,
    over_budget,
)
from agents.rules import intent_prompt
from protocols.pipeline import (
    Intent,
    Outcome,
    ParsedIntent,
    Plan,
    PlanDraft,
    PlanStep,
    Risk,
    Spend,
    check_dag,
)

SYSTEM_PROMPT = """You plan the steps that carry out a list of actions. One step per action,
ids s1, s2, ... in order; depends_on lists the ids of the steps it waits for (from the
action's "after" indices). Tools and args: file_list {path}, file_read {path},
shell {argv: [command, args...]}, http {method: "GET", url}, deploy {service, environment,
version}, python {function: "word_count", kwargs: {path}}. Use nothing else."""

DEFAULT_RISK: dict[str, Risk] = {
    "file_list": "low",
    "file_read": "low",
    "python": "low",
    "shell": "medium",
    "http": "medium",
    "deploy": "high",
}
DEFAULT_COST: dict[str, float] = {
    "file_list": 0.0,
    "file_read": 0.0,
    "python": 0.0001,
    "shell": 0.0001,
    "http": 0.0005,
    "deploy": 0.01,
}


class PlannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: dict[str, Any] = Field(default_factory=lambda: {"provider": "rules"})
    attempts: int = Field(default=2, ge=1, le=10)
    max_tokens: int = Field(default=2048, ge=64, le=100_000)
    give_up_after: int = Field(
        default=3, ge=1, le=100, description="deliveries while the LLM is down before reporting"
    )
    tool_risk: dict[str, Risk] = Field(
        default_factory=lambda: dict(DEFAULT_RISK),
        description="tools the planner may use, with their risk",
    )
    tool_cost_usd: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_COST),
        description="estimated USD per step of each tool",
    )


class Planner(LLMAgent[PlannerConfig]):
    Config = PlannerConfig
    consumes = (Intent,)
    produces = (Plan, Outcome)

    async def handle(self, ctx: MessageContext) -> None:
        intent = ctx.payload
        assert isinstance(intent, Intent)
        try:
            steps, spend, error = await self._draft(ctx, intent)
        except LLMUnavailable as exc:
            reason = llm_unavailable(ctx, exc, self.config.give_up_after)
            finish(ctx, "failed", intent.request, reasons=[reason], spend=intent.spend)
            return
        if steps is None:
            finish(ctx, "invalid_request", intent.request, reasons=[error], spend=spend)
            return
        estimate = round(sum(s.cost_estimate_usd for s in steps), 9)
        plan = Plan(request=intent.request, steps=steps, cost_estimate_usd=estimate, spend=spend)
        if over_budget(ctx, spend.cost_usd + estimate):
            finish(
                ctx,
                "budget_exceeded",
                intent.request,
                plan=plan,
                spend=spend,
                reasons=[
                    budget_reason(
                        ctx, spend.cost_usd + estimate, "spent so far plus the plan's estimate"
                    )
                ],
            )
            return
        ctx.send(plan)

    async def _draft(
        self, ctx: MessageContext, intent: Intent
    ) -> tuple[list[PlanStep] | None, Spend, str]:
        ask = LLMAsk(
            system=SYSTEM_PROMPT,
            prompt=intent_prompt(
                ParsedIntent(actions=intent.actions, confidence=intent.confidence)
            ),
            schema=PlanDraft,
            max_tokens=self.config.max_tokens,
            attempts=self.config.attempts,
            invalid_event="plan_answer_invalid",
            invalid_reason="the model's plan was not valid: ",
            refused_reason="cannot plan this request: ",
            invalid=(LLMOutputError, ValueError),
        )
        return await ask_llm(self.runtime, ctx, self.provider, ask, intent.spend, self.steps)

    def steps(self, draft: PlanDraft) -> list[PlanStep]:
        """Checked steps with risk and cost from the tables (ValueError if invalid)."""
        unknown = sorted({s.tool for s in draft.steps} - set(self.config.tool_risk))
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(self.config.tool_risk)}")
        check_dag(draft.steps)
        return [
            PlanStep(
                id=s.id,
                tool=s.tool,
                args=s.args,
                depends_on=s.depends_on,
                description=s.description,
                risk=self.config.tool_risk[s.tool],
                cost_estimate_usd=self.config.tool_cost_usd.get(s.tool, 0.0),
            )
            for s in draft.steps
        ]
