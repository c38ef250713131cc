"""router: holds each request's plan DAG in the runtime's state, dispatches ready steps to the
executor type that declares the step's tool (independent steps in parallel), collects their
results, and hands the finished plan to the reporter.

State: one value per request in ``runtime.state``, ``keys.request_state(cid, "plan")``
(hash-tagged: one slot), the JSON of :class:`StoredPlan`: the plan's state
(:class:`agents.plan_state.PlanState`) and, per input message id, the effects handling that
message had. Every change is one ``runtime.state.transact`` (optimistic: read, compute, write
only if no other writer changed the key; else again on the fresh value), so two router
replicas can never both move a step to ``dispatched``. The effects record makes handling
idempotent per input message: a redelivered message (its worker died before committing
outputs) re-emits the very same outputs (same deterministic ids) without touching the state
again.

Human approval expiry: a plan that waits for approval starts a timer in the router's schedule
(``runtime.timers``, agent_runtime/schedule.py): at ``expires_at`` on the Redis server's clock
the schedule sweep of a router worker publishes an ``approval.timer`` to the router, and the
steps still waiting are rejected. Until then nothing of the request is pending in the router's
group and no worker slot is held; once no step waits any more (approved, rejected, expired,
cancelled) the timer is removed, so a finished request leaves nothing behind. (Without timers,
e.g. under ``AgentHarness``, the router sends itself the timer and waits on it with
``Retry(delay, count=False)``, as it did before the schedule existed.)

Cancellation (``agent-runtime cancel``, agent_runtime/cancel.py): a message of a cancelled
request dispatches nothing; the router drops its approval timer and acks.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.agent import Agent, MessageContext
from agent_runtime.approval import APPROVAL_STATE
from agent_runtime.cancel import cancellation
from agent_runtime.errors import Retry, Skip
from agent_runtime.schedule import SCHEDULE_AGENT
from agents.approvals import idempotency_key, task_message_id
from agents.common import finish
from agents.plan_state import Effects, PlanState
from protocols.pipeline import (
    ApprovalResolution,
    ApprovalTimer,
    Outcome,
    SafetyVerdict,
    StepResult,
    Task,
)

DEFAULT_EXECUTORS = {"executor": ["file_list", "file_read", "shell", "http", "python", "deploy"]}
PLAN_STATE = "plan"
Transition = Callable[[PlanState | None], tuple[PlanState | None, Effects]]


class StoredPlan(BaseModel):
    """What the router keeps per request: the plan's state and, per input message id, the
    effects its handling had (a redelivered message re-emits them, never re-applies)."""

    model_config = ConfigDict(extra="forbid")

    state: PlanState
    effects: dict[str, Effects] = Field(default_factory=dict)


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    executors: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_EXECUTORS.items()},
        description="executor agent type -> the tools it declares",
    )
    state_ttl: int = Field(default=7 * 24 * 3600, ge=60, description="seconds a plan is kept")
    timer_poll: float = Field(
        default=30.0,
        gt=0,
        description="longest wait between checks of an approval timer where no schedule "
        "sweeps the router's timers (AgentHarness); workers use the schedule",
    )


class Router(Agent[RouterConfig]):
    Config = RouterConfig
    consumes = (SafetyVerdict, StepResult, ApprovalResolution, ApprovalTimer)
    produces = (Task, StepResult, Outcome, ApprovalTimer)

    def executor_for(self, tool: str) -> str | None:
        return next((name for name, tools in self.config.executors.items() if tool in tools), None)

    async def handle(self, ctx: MessageContext) -> None:
        payload = ctx.payload
        if isinstance(payload, SafetyVerdict) and payload.decision == "rejected":
            finish(
                ctx,
                "rejected",
                payload.plan.request,
                reasons=payload.reasons,
                plan=payload.plan,
                spend=payload.plan.spend,
            )
            return
        if await self._cancelled(ctx):
            raise Skip
        if isinstance(payload, ApprovalTimer) and ctx.message.from_agent != SCHEDULE_AGENT:
            await self._wait_for(ctx, payload)  # a timer sent the old way: schedule it
        state, effects = await self.transact(ctx, self._transition(ctx))
        if state is None:
            ctx.log.info("plan_unknown")
            raise Skip  # e.g. a result for a request whose state expired
        await self._keep_timer(state, effects)
        self.emit(ctx, state, effects)

    async def _cancelled(self, ctx: MessageContext) -> bool:
        """Whether the request was cancelled; if so, its approval timer is dropped."""
        cid = str(ctx.message.correlation_id)
        cancelled = await cancellation(self.runtime.state, self.runtime.keys, cid)
        if cancelled is None:
            return False
        ctx.log.info("request_cancelled", by=cancelled.by)
        raw = await self.runtime.state.get(self.runtime.keys.request_state(cid, PLAN_STATE))
        timer = StoredPlan.model_validate_json(raw).state.timer if raw else None
        if timer is not None and self.runtime.timers is not None:
            await self.runtime.timers.cancel(timer)
        return True

    async def _wait_for(self, ctx: MessageContext, timer: ApprovalTimer) -> None:
        """A timer that did not come from the schedule: into the schedule (then acked), or,
        without timers, waited on in place (``Retry`` without using up deliveries)."""
        timers = self.runtime.timers
        if timers is not None:
            await timers.at(timer.expires_at, timers.name(ctx.message, timer))
            raise Skip
        remaining = timer.expires_at.timestamp() - await self.runtime.clock.now()
        if remaining > 0:
            raise Retry(
                "approval timer not due", delay=min(remaining, self.config.timer_poll), count=False
            )

    async def _keep_timer(self, state: PlanState, effects: Effects) -> None:
        """Start the approval timer of a plan that began waiting; remove it once nothing
        waits any more (idempotent: a redelivered message does the same again)."""
        timers = self.runtime.timers
        if timers is None or state.timer is None:
            return
        if not state.awaiting():
            await timers.cancel(state.timer)
        elif effects.timer and state.expires_at is not None:
            await timers.at(state.expires_at, state.timer)

    def _transition(self, ctx: MessageContext) -> Transition:
        payload = ctx.payload

        def apply(state: PlanState | None) -> tuple[PlanState | None, Effects]:
            if isinstance(payload, SafetyVerdict):
                if state is not None:
                    return state, Effects()
                started, effects = PlanState.start(payload, ctx.message.budget_usd)
                if effects.timer and self.runtime.timers is not None:
                    assert started.expires_at is not None
                    timer = ApprovalTimer(expires_at=started.expires_at, steps=started.awaiting())
                    started.timer = self.runtime.timers.name(ctx.message, timer)
                return started, effects
            if state is None:
                return None, Effects()
            if isinstance(payload, StepResult):
                return state, state.record(payload)
            if isinstance(payload, ApprovalResolution):
                return state, state.resolve(payload)
            assert isinstance(payload, ApprovalTimer)
            return state, state.expire(payload.steps)

        return apply

    def emit(self, ctx: MessageContext, state: PlanState, effects: Effects) -> None:
        cid = str(ctx.message.correlation_id)
        for step_id in effects.dispatch:
            step = state.plan.step(step_id)
            target = self.executor_for(step.tool)
            if target is None:  # fails the step through the normal result path
                ctx.send(
                    StepResult(
                        step_id=step_id,
                        tool=step.tool,
                        status="failed",
                        error=f"no executor type declares tool {step.tool!r}",
                    ),
                    to=self.runtime.name,
                )
                continue
            ctx.send(  # the message id and key the safety checker's approval binds
                Task(
                    step=step,
                    approval=state.approvals.get(step_id),
                    idempotency_key=idempotency_key(cid, step_id),
                    spent_usd=state.spend.cost_usd,
                ),
                to=target,
                message_id=task_message_id(cid, step_id),
            )
        if effects.timer and state.expires_at is not None and state.timer is None:
            ctx.send(
                ApprovalTimer(expires_at=state.expires_at, steps=state.awaiting()),
                to=self.runtime.name,
            )
        if effects.finished:
            assert state.outcome is not None
            results = [state.results[s.id] for s in state.plan.steps if s.id in state.results]
            finish(
                ctx,
                state.outcome,
                state.plan.request,
                reasons=state.reasons,
                plan=state.plan,
                results=results,
                spend=state.spend,
                statuses=dict(state.status),
            )

    async def transact(
        self, ctx: MessageContext, apply: Transition
    ) -> tuple[PlanState | None, Effects]:
        """Apply ``apply`` to the request's state atomically, once per input message."""
        cid = str(ctx.message.correlation_id)
        keys = self.runtime.keys
        marker = str(ctx.message.message_id)

        def step(raw: bytes | None) -> tuple[bytes | None, tuple[PlanState | None, Effects]]:
            stored = StoredPlan.model_validate_json(raw) if raw else None
            state = stored.state if stored else None
            if stored is not None and marker in stored.effects:
                return None, (state, stored.effects[marker])
            state, effects = apply(state)
            if state is None:
                return None, (None, effects)
            done = dict(stored.effects) if stored else {}
            done[marker] = effects
            return StoredPlan(state=state, effects=done).model_dump_json().encode(), (
                state,
                effects,
            )

        key = keys.request_state(cid, PLAN_STATE)
        state, effects = await self.runtime.state.transact(key, step, ttl=self.config.state_ttl)
        if state is not None and state.expires_at is not None:
            # the approve/reject commands show only what still waits (idempotent: also after
            # a redelivery that found its effects already recorded)
            decided = [s for s, v in state.status.items() if v != "awaiting_approval"]
            await self.runtime.state.hash_delete(keys.request_state(cid, APPROVAL_STATE), *decided)
        return state, effects
