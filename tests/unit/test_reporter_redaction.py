"""The reporter masks secrets in the Report before it replies or writes the reports stream."""

from __future__ import annotations

import json

import anyio

from agent_runtime.agent import Services
from agent_runtime.observability.redaction import Redactor
from agent_runtime.testing import AgentHarness
from agents.reporter import Reporter
from protocols.envelope import utcnow
from protocols.pipeline import Outcome, Plan, PlanStep, Report, RequestInfo, StepResult

CONFIG_SECRET = "cfgcanary-0123456789"


def outcome() -> Outcome:
    step = PlanStep(id="s1", tool="shell", args={"argv": ["echo", f"token={CONFIG_SECRET}"]})
    result = StepResult(
        step_id="s1",
        tool="shell",
        status="failed",
        output={"stdout": f"connecting to redis://app:{CONFIG_SECRET}@db:6379", "api_key": "k1"},
        error=f"login failed: password={CONFIG_SECRET}",
        attempts=1,
    )
    request = RequestInfo(text=f"run echo {CONFIG_SECRET}", requested_at=utcnow())
    return Outcome(
        status="failed",
        request=request,
        reasons=[f"bearer Bearer {CONFIG_SECRET}"],
        plan=Plan(request=request, steps=[step], cost_estimate_usd=0.0),
        results=[result],
    )


def test_reports_are_redacted_in_the_reply_and_the_reports_stream() -> None:
    redactor = Redactor().with_secrets([CONFIG_SECRET])
    harness = AgentHarness(Reporter, services=Services(redactor=redactor))
    outputs = anyio.run(harness.handle, outcome())
    assert len(outputs) == 2  # the reply and the reports stream
    for out in outputs:
        text = json.dumps(out.message.payload)
        assert CONFIG_SECRET not in text
        report = Report.model_validate(out.message.payload)
        (step,) = report.steps
        assert step.output == {"stdout": "connecting to redis://app:***@db:6379", "api_key": "***"}
        assert step.args == {"argv": ["echo", "token=***"]} and step.status == "failed"
        assert report.request == "run echo ***"
