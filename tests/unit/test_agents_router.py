"""The router: DAG transitions, idempotency per input message, and atomic dispatch when two
router instances handle results of one request at the same time (fakeredis: WATCH/MULTI)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import anyio
import fakeredis
import pytest

from agent_runtime.errors import Retry
from agent_runtime.testing import AgentHarness
from agent_runtime.transport.state import RedisState
from agents.plan_state import PlanState
from agents.router import Router
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import (
    ApprovalResolution,
    ApprovalTimer,
    Plan,
    PlanStep,
    RequestInfo,
    SafetyVerdict,
    StepResult,
)
from tests.fixtures.approvals import placeholder


def dag(**deps: list[str]) -> Plan:
    steps = [
        PlanStep(
            id=name,
            tool="shell",
            args={"argv": ["echo", name]},
            depends_on=d,
            cost_estimate_usd=0.1,
        )
        for name, d in deps.items()
    ]
    return Plan(
        request=RequestInfo(text="t", requested_at=utcnow()),
        steps=steps,
        cost_estimate_usd=0.1 * len(steps),
    )


def verdict(plan: Plan, awaiting: tuple[str, ...] = ()) -> SafetyVerdict:
    return SafetyVerdict(
        decision="needs_approval" if awaiting else "approved",
        plan=plan,
        awaiting_approval=list(awaiting),
        approvals=[placeholder(s.id) for s in plan.steps if s.id not in awaiting],
        approval_expires_at=utcnow() + timedelta(seconds=60) if awaiting else None,
    )


def ok(step: str, status: str = "succeeded") -> StepResult:
    return StepResult(step_id=step, tool="shell", status=status)  # type: ignore[arg-type]


# ------------------------------------------------------------------ pure transitions
def test_independent_steps_start_together_and_dependents_wait_for_all() -> None:
    state, fx = PlanState.start(verdict(dag(a=[], b=[], c=["a", "b"])), None)
    assert fx.dispatch == ["a", "b"]
    assert state.record(ok("a")).dispatch == []
    assert state.record(ok("b")).dispatch == ["c"]
    final = state.record(ok("c"))
    assert final.finished and state.outcome == "succeeded"


def test_a_failure_skips_dependents_but_independent_steps_finish() -> None:
    state, _ = PlanState.start(verdict(dag(a=[], b=[], c=["a"], d=["c"])), None)
    state.record(ok("a", "failed"))
    assert state.status["c"] == state.status["d"] == "skipped"
    assert state.record(ok("b")).finished and state.outcome == "failed"


def test_repeated_or_unknown_results_are_not_counted_twice() -> None:
    state, _ = PlanState.start(verdict(dag(a=[], b=[])), None)
    state.record(ok("a"))
    assert not state.record(ok("a"))
    assert not state.record(ok("zz"))
    assert state.spend.cost_usd == 0 and state.status["b"] == "dispatched"


def test_budget_spent_cancels_what_has_not_started() -> None:
    state, _ = PlanState.start(verdict(dag(a=[], b=["a"])), budget_usd=0.05)
    result = ok("a").model_copy(update={"cost_usd": 0.06})
    assert state.record(result).finished
    assert state.outcome == "budget_exceeded" and state.status["b"] == "cancelled"


def test_approval_resumes_and_expiry_or_rejection_rejects() -> None:
    state, fx = PlanState.start(verdict(dag(a=[], d=["a"]), awaiting=("d",)), None)
    assert fx.dispatch == ["a"] and fx.timer
    state.record(ok("a"))
    approval = placeholder("d", "human:ann")
    assert state.resolve(ApprovalResolution(approvals=[approval])).dispatch == ["d"]
    assert not state.resolve(ApprovalResolution(approvals=[approval]))  # decided already

    state, _ = PlanState.start(verdict(dag(a=[], d=["a"]), awaiting=("d",)), None)
    state.record(ok("a"))
    assert state.expire(["d"]).finished and state.outcome == "rejected"
    assert any("expired" in r for r in state.reasons)


# ------------------------------------------------------------------ the agent on fakeredis
def router(redis: Any, name: str = "router") -> AgentHarness:
    return AgentHarness(
        Router, state=RedisState(redis), name=name, config={"executors": {"exec_a": ["shell"]}}
    )


def send(
    harness: AgentHarness, payload: Any, cid: uuid.UUID, message: AgentMessage | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    message = message or harness.message_for(payload, correlation_id=cid)
    outputs = anyio.run(lambda: harness.handle(payload, message=message))
    return [(o.message.to_agent, o.message.message_type, o.message.payload) for o in outputs]


def test_dispatches_to_the_executor_declaring_the_tool_and_reports_at_the_end() -> None:
    redis, cid = fakeredis.FakeAsyncRedis(), uuid.uuid4()
    r = router(redis)
    out = send(r, verdict(dag(a=[], b=["a"])), cid)
    assert [(to, t, p["step"]["id"]) for to, t, p in out] == [("exec_a", "task.dispatched", "a")]
    assert out[0][2]["idempotency_key"] == f"{cid}:a"
    assert [o[1] for o in send(r, ok("a"), cid)] == ["task.dispatched"]
    (final,) = send(r, ok("b"), cid)
    assert final[1] == "plan.finished" and final[2]["status"] == "succeeded"
    assert [res["step_id"] for res in final[2]["results"]] == ["a", "b"]


def test_a_redelivered_message_re_emits_the_same_outputs_without_new_effects() -> None:
    redis, cid = fakeredis.FakeAsyncRedis(), uuid.uuid4()
    r = router(redis)
    send(r, verdict(dag(a=[], b=[], c=["a", "b"])), cid)
    send(r, ok("a"), cid)
    message = r.message_for(ok("b"), correlation_id=cid)
    first = send(r, ok("b"), cid, message)
    again = send(r, ok("b"), cid, message)  # same message id: worker died before commit
    assert [p["step"]["id"] for _, _, p in first] == ["c"]
    assert [p["step"]["id"] for _, _, p in again] == ["c"]
    other = send(r, ok("b"), cid)  # a different message with the same result: no effect
    assert other == []


def test_a_rejected_verdict_finishes_without_dispatching() -> None:
    rejected = verdict(dag(a=[])).model_copy(
        update={"decision": "rejected", "approvals": [], "reasons": ["no"]}
    )
    (out,) = send(router(fakeredis.FakeAsyncRedis()), rejected, uuid.uuid4())
    assert out[1] == "plan.finished" and out[2]["status"] == "rejected"


def test_the_approval_timer_waits_without_using_deliveries_then_expires() -> None:
    redis, cid = fakeredis.FakeAsyncRedis(), uuid.uuid4()
    r = router(redis)
    out = send(r, verdict(dag(a=[], d=["a"]), awaiting=("d",)), cid)
    timer = next(p for _, t, p in out if t == "approval.timer")
    with pytest.raises(Retry) as caught:
        send(r, ApprovalTimer.model_validate(timer), cid)
    assert caught.value.count is False and caught.value.delay is not None
    send(r, ok("a"), cid)
    due = ApprovalTimer(expires_at=utcnow() - timedelta(seconds=1), steps=["d"])
    (final,) = send(r, due, cid)
    assert final[2]["status"] == "rejected" and final[2]["statuses"]["d"] == "rejected"


class AheadClock:
    """A server clock an hour ahead of this machine's."""

    async def now(self) -> float:
        return time.time() + 3600


def test_the_approval_timer_is_due_on_the_server_clock_not_the_local_one() -> None:
    """Where no schedule sweeps timers (the harness), the router waits on the timer itself:
    whether it is due is decided by the runtime's (server) clock, so a local clock that is
    behind cannot keep an expired approval open."""
    redis, cid = fakeredis.FakeAsyncRedis(), uuid.uuid4()
    r = router(redis)
    r.agent.runtime.clock = AheadClock()
    send(r, verdict(dag(d=[]), awaiting=("d",)), cid)
    # expired on the server clock (an hour ahead), 30 minutes away on the local one
    timer = ApprovalTimer(expires_at=utcnow() + timedelta(minutes=30), steps=["d"])
    (final,) = send(r, timer, cid)
    assert final[2]["status"] == "rejected" and final[2]["statuses"]["d"] == "rejected"


def test_two_routers_racing_on_one_request_dispatch_each_step_once() -> None:
    """Results of a, b, c handled concurrently by two router instances (interleaved at every
    await): d must be dispatched exactly once."""
    server = fakeredis.FakeServer()
    r1 = router(fakeredis.FakeAsyncRedis(server=server), "router")
    r2 = router(fakeredis.FakeAsyncRedis(server=server), "router")
    cid = uuid.uuid4()
    send(r1, verdict(dag(a=[], b=[], c=[], d=["a", "b", "c"])), cid)
    dispatched: list[str] = []

    async def one(harness: AgentHarness, result: StepResult) -> None:
        outputs = await harness.handle(
            result, message=harness.message_for(result, correlation_id=cid)
        )
        dispatched.extend(
            o.message.payload["step"]["id"]
            for o in outputs
            if o.message.message_type == "task.dispatched"
        )

    async def race() -> None:
        async with anyio.create_task_group() as tg:
            for harness, step in ((r1, "a"), (r2, "b"), (r1, "c")):
                tg.start_soon(one, harness, ok(step))

    anyio.run(race)
    assert dispatched == ["d"]
