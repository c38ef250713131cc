"""intent_parser, planner, safety_checker, executor and reporter, each alone on the shipped
harness with fakes (fake LLM, fakeredis for the approval hash)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import fakeredis
import pytest

from agent_runtime.agent import Services
from agent_runtime.approval import verifier
from agent_runtime.errors import LLMOutputError
from agent_runtime.llm.base import Completion, Usage
from agent_runtime.testing import AgentHarness
from agent_runtime.transport.state import RedisState
from agents import approvals
from agents.executor import Executor
from agents.intent_parser import IntentParser
from agents.planner import Planner
from agents.reporter import Reporter
from agents.safety_checker import SafetyChecker
from protocols.core import UserRequest
from protocols.envelope import utcnow
from protocols.pipeline import (
    ApprovalDecision,
    Intent,
    IntentAction,
    Outcome,
    Plan,
    PlanStep,
    Report,
    RequestInfo,
    SafetyVerdict,
    StepResult,
    Task,
)
from tests.fixtures.approvals import key_pair, signed_task


@pytest.fixture(autouse=True)
def approval_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in key_pair().items():
        monkeypatch.setenv(name, value)


def request() -> RequestInfo:
    return RequestInfo(text="t", requested_at=utcnow())


def handle(harness: AgentHarness, payload: Any, **overrides: Any) -> list[Any]:
    message = harness.message_for(payload, **overrides)
    outputs = anyio.run(lambda: harness.handle(payload, message=message))
    return [(o.message.to_agent, o.message.message_type, o.message.payload) for o in outputs]


class FakeLLM:
    """Answers from a script: each item is a value to return or an exception to raise."""

    name = "fake"

    def __init__(self, *answers: Any, cost: float = 0.001) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.cost = cost

    async def complete(
        self, *, system: str, prompt: str, schema: type[Any], max_tokens: int = 1024
    ) -> Completion[Any]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        usage = Usage("fake", "m", input_tokens=10, output_tokens=5, cost_usd=self.cost)
        return Completion(schema.model_validate(answer), usage)


# ------------------------------------------------------------------ intent_parser
def test_intent_parser_uses_the_rules_provider_by_default() -> None:
    (out,) = handle(AgentHarness(IntentParser), UserRequest(text="run date then read a.txt"))
    assert out[1] == "intent.parsed"
    assert [(a["action"], a["after"]) for a in out[2]["actions"]] == [
        ("run_command", []),
        ("read_file", [0]),
    ]


def test_intent_parser_reports_text_outside_the_grammar() -> None:
    (out,) = handle(AgentHarness(IntentParser), UserRequest(text="make me a sandwich"))
    assert out[1] == "plan.finished" and out[2]["status"] == "invalid_request"


def test_invalid_model_answers_are_retried_then_reported_never_passed_on() -> None:
    good = {"actions": [{"action": "read_file", "target": "a"}], "confidence": 0.9}
    llm = FakeLLM(LLMOutputError("bad json"), good)
    (out,) = handle(AgentHarness(IntentParser, services=Services(llm=llm)), UserRequest(text="x"))
    assert out[1] == "intent.parsed" and llm.calls == 2
    assert out[2]["spend"]["cost_usd"] == pytest.approx(0.001)

    llm = FakeLLM(LLMOutputError("bad"), LLMOutputError("still bad"))
    (out,) = handle(AgentHarness(IntentParser, services=Services(llm=llm)), UserRequest(text="x"))
    assert out[1] == "plan.finished" and out[2]["status"] == "invalid_request"
    assert "still bad" in out[2]["reasons"][0]


def test_intent_parser_checks_confidence_and_budget() -> None:
    unsure = {"actions": [{"action": "read_file", "target": "a"}], "confidence": 0.1}
    (out,) = handle(
        AgentHarness(IntentParser, services=Services(llm=FakeLLM(unsure))), UserRequest(text="x")
    )
    assert out[2]["status"] == "invalid_request"
    sure = {**unsure, "confidence": 1.0}
    (out,) = handle(
        AgentHarness(IntentParser, services=Services(llm=FakeLLM(sure, cost=0.5))),
        UserRequest(text="x"),
        budget_usd=0.1,
    )
    assert out[2]["status"] == "budget_exceeded"


# ------------------------------------------------------------------ planner
def intent(*actions: IntentAction) -> Intent:
    return Intent(request=request(), actions=list(actions), confidence=1.0)


def test_planner_builds_a_dag_with_risk_and_cost_from_its_tables() -> None:
    payload = intent(
        IntentAction(action="run_command", target="date"),
        IntentAction(
            action="deploy",
            target="web",
            after=[0],
            parameters={"environment": "prod", "version": "1"},
        ),
    )
    (out,) = handle(AgentHarness(Planner), payload)
    plan = Plan.model_validate(out[2])
    assert [(s.id, s.tool, s.risk, s.depends_on) for s in plan.steps] == [
        ("s1", "shell", "medium", []),
        ("s2", "deploy", "high", ["s1"]),
    ]
    assert plan.cost_estimate_usd == pytest.approx(0.0101)


def test_planner_rejects_cyclic_or_unknown_tool_drafts_then_reports() -> None:
    cyclic = {
        "steps": [
            {"id": "a", "tool": "shell", "depends_on": ["b"]},
            {"id": "b", "tool": "shell", "depends_on": ["a"]},
        ]
    }
    unknown = {"steps": [{"id": "a", "tool": "rm_rf"}]}
    llm = FakeLLM(cyclic, unknown)
    payload = intent(IntentAction(action="run_command", target="date"))
    (out,) = handle(AgentHarness(Planner, services=Services(llm=llm)), payload)
    assert out[2]["status"] == "invalid_request" and "rm_rf" in out[2]["reasons"][0]


def test_planner_stops_a_plan_over_the_request_budget() -> None:
    payload = intent(IntentAction(action="deploy", target="web"))
    (out,) = handle(AgentHarness(Planner), payload, budget_usd=0.001)
    assert out[1] == "plan.finished" and out[2]["status"] == "budget_exceeded"


# ------------------------------------------------------------------ safety_checker
POLICY = {
    "shell": {"commands": ["date", "echo"]},
    "http": {"hosts": ["example.com"]},
    "deny_arg_patterns": [r"\.\."],
    "approval_required": ["deploy"],
    "budget_usd": 1.0,
}


def plan(*steps: PlanStep) -> Plan:
    return Plan(
        request=request(),
        steps=list(steps),
        cost_estimate_usd=sum(s.cost_estimate_usd for s in steps),
    )


def safety(redis: Any = None, **policy: Any) -> AgentHarness:
    return AgentHarness(
        SafetyChecker,
        config={"policy": {**POLICY, **policy}},
        state=RedisState(redis or fakeredis.FakeAsyncRedis()),
    )


@pytest.mark.parametrize(
    "step",
    [
        PlanStep(id="s1", tool="shell", args={"argv": ["cat", "x"]}),
        PlanStep(id="s1", tool="file_read", args={"path": "../x"}),
        PlanStep(id="s1", tool="http", args={"url": "https://evil.test/"}),
        PlanStep(id="s1", tool="rm", args={}),
        PlanStep(id="s1", tool="shell", args={"argv": ["date"]}, risk="high"),
    ],
)
def test_policy_violations_reject_the_whole_plan(step: PlanStep) -> None:
    payload = plan(PlanStep(id="s0", tool="file_read", args={"path": "ok"}), step)
    (out,) = handle(safety(risk_ceiling="medium"), payload)
    assert out[1] == "plan.verdict" and out[2]["decision"] == "rejected"
    assert out[2]["approvals"] == [] and out[2]["reasons"]


def test_approved_steps_are_signed_for_exactly_their_arguments() -> None:
    harness = safety()
    step = PlanStep(id="s1", tool="shell", args={"argv": ["date"]})
    message = harness.message_for(plan(step))
    outputs = anyio.run(lambda: harness.handle(plan(step), message=message))
    verdict = SafetyVerdict.model_validate(outputs[0].message.payload)
    assert verdict.decision == "approved"
    (approval,) = verdict.approvals
    cid = str(message.correlation_id)
    assert approval.message_id == str(approvals.task_message_id(cid, "s1"))
    assert approval.idempotency_key == f"{cid}:s1"
    grant = approvals.grant_for(
        cid,
        step,
        "policy",
        approval.expires_at,
        key=approval.idempotency_key,
        message=approval.message_id,
    )
    assert verifier(key_pair()).verify(grant, approval.key_id, approval.signature)
    other = step.model_copy(update={"args": {"argv": ["date", "-u"]}})
    moved = approvals.grant_for(
        cid,
        other,
        "policy",
        approval.expires_at,
        key=grant.idempotency_key,
        message=grant.message_id,
    )
    assert not verifier(key_pair()).verify(moved, approval.key_id, approval.signature)


def test_over_budget_plans_end_as_budget_exceeded() -> None:
    step = PlanStep(id="s1", tool="shell", args={"argv": ["date"]}, cost_estimate_usd=2.0)
    (out,) = handle(safety(), plan(step))
    assert out[1] == "plan.finished" and out[2]["status"] == "budget_exceeded"


def test_approval_required_steps_wait_and_human_decisions_are_signed() -> None:
    redis = fakeredis.FakeAsyncRedis()
    harness = safety(redis)
    steps = (
        PlanStep(id="s1", tool="shell", args={"argv": ["date"]}),
        PlanStep(id="s2", tool="deploy", args={"service": "web"}, depends_on=["s1"]),
    )
    message = harness.message_for(plan(*steps))
    (out,) = anyio.run(lambda: harness.handle(plan(*steps), message=message))
    verdict = SafetyVerdict.model_validate(out.message.payload)
    assert verdict.decision == "needs_approval" and verdict.awaiting_approval == ["s2"]
    assert [a.step_id for a in verdict.approvals] == ["s1"]
    decision = ApprovalDecision(approved=True, approver="ann")
    decided = harness.message_for(decision, correlation_id=message.correlation_id)
    (out,) = anyio.run(lambda: harness.handle(decision, message=decided))
    (approval,) = out.message.payload["approvals"]
    assert approval["approver"] == "human:ann" and approval["step_id"] == "s2"
    pending = anyio.run(
        redis.hgetall,
        harness.agent.runtime.keys.request_state(str(message.correlation_id), "approval"),
    )
    assert list(pending) == [b"s2"]


# ------------------------------------------------------------------ executor
def task_for(
    cid: uuid.UUID,
    step: PlanStep,
    *,
    approver: str = "policy",
    signed_args: dict[str, Any] | None = None,
) -> Task:
    signed = step if signed_args is None else step.model_copy(update={"args": signed_args})
    task, _ = signed_task(signed, cid, approver=approver)
    return task.model_copy(update={"step": step})


def run_task(task: Task, cid: uuid.UUID, sandbox: Path) -> dict[str, Any]:
    harness = AgentHarness(Executor, config={"sandbox": str(sandbox)})
    message_id = approvals.task_message_id(str(cid), task.step.id)
    (out,) = handle(harness, task, correlation_id=cid, message_id=message_id)
    return dict(out[2])


def test_executor_runs_an_approved_task(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    cid = uuid.uuid4()
    result = run_task(
        task_for(cid, PlanStep(id="s1", tool="file_read", args={"path": "a.txt"})), cid, tmp_path
    )
    assert result["status"] == "succeeded" and result["output"] == "hello"
    assert result["attempts"] == 1


def test_executor_refuses_forged_or_mismatched_approvals(tmp_path: Path) -> None:
    step = PlanStep(id="s1", tool="python", args={"function": "sha256", "kwargs": {"text": "x"}})
    cid = uuid.uuid4()
    forged = [
        task_for(uuid.uuid4(), step),  # another request
        task_for(cid, step, signed_args={"function": "sha256", "kwargs": {"text": "y"}}),
        forge(task_for(cid, step, approver="human:eve"), approver="policy"),
        forge(task_for(cid, step), signature="0" * 128),
        Task(step=step, approval=None, idempotency_key="k"),
    ]
    for task in forged:
        result = run_task(task, cid, tmp_path)
        assert result["status"] == "refused" and result["output"] is None
        assert result["attempts"] == 0


def test_executor_reports_tool_failures(tmp_path: Path) -> None:
    cid = uuid.uuid4()
    step = PlanStep(id="s1", tool="file_read", args={"path": "missing.txt"})
    result = run_task(task_for(cid, step), cid, tmp_path)
    assert result["status"] == "failed" and "not a regular file" in result["error"]


def forge(task: Task, **changes: Any) -> Task:
    assert task.approval is not None
    approval = task.approval.model_copy(update=changes)
    return task.model_copy(update={"approval": approval})


# ------------------------------------------------------------------ reporter
def test_reporter_replies_and_publishes_a_report() -> None:
    step = PlanStep(id="s1", tool="shell", args={"argv": ["date"]})
    result = StepResult(
        step_id="s1",
        tool="shell",
        status="succeeded",
        output="x" * 500,
        duration_ms=3.0,
        attempts=1,
    )
    outcome = Outcome(status="succeeded", request=request(), plan=plan(step), results=[result])
    harness = AgentHarness(Reporter, config={"max_output_chars": 100})
    outputs = anyio.run(harness.handle, outcome)
    assert [o.stream for o in outputs] == [outputs[0].message.reply_to, "test:reports"]
    report = Report.model_validate(outputs[0].message.payload)
    assert report.status == "succeeded" and report.steps[0].truncated
    assert json.dumps(report.model_dump(mode="json"))


def test_an_llm_outage_is_retried_then_reported_never_a_hang() -> None:
    from agent_runtime.errors import LLMRateLimited, Retry

    outage = LLMRateLimited("429", retry_after=7.0)
    harness = AgentHarness(IntentParser, services=Services(llm=FakeLLM(outage, outage)))
    with pytest.raises(Retry) as caught:
        anyio.run(lambda: harness.handle(UserRequest(text="x"), delivery_count=1))
    assert caught.value.delay == 7.0
    (out,) = anyio.run(lambda: harness.handle(UserRequest(text="x"), delivery_count=3))
    assert out.message.message_type == "plan.finished"
    assert out.message.payload["status"] == "failed"
    assert "unavailable" in out.message.payload["reasons"][0]
