"""Payloads of the default pipeline, version 1 each.

    user.request -> intent_parser -> intent.parsed -> planner -> plan.created
    -> safety_checker -> plan.verdict -> router -> task.dispatched -> executor
    -> task.result -> router -> plan.finished -> reporter -> report.created (reply + reports)

Human approval: ``approval.decision`` (from ``agent-runtime approve/reject``) -> safety_checker
-> ``approval.resolved`` -> router. The router's own ``approval.timer`` expires waiting steps.

Any agent may end a request early with ``plan.finished`` (invalid request, rejection, budget).
Also here: the structured-output models an LLM provider fills (:class:`ParsedIntent`,
:class:`PlanDraft`); agents validate them before anything is passed on.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.base import Payload
from protocols.core import MAX_REQUEST_TEXT

MAX_STEPS = 16
STEP_ID = r"^[a-z][a-z0-9_\-]{0,31}$"

ActionName = Literal["list_files", "read_file", "run_command", "fetch_url", "deploy", "count_words"]
Risk = Literal["low", "medium", "high"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
StepStatus = Literal["succeeded", "failed", "refused", "skipped", "rejected", "cancelled"]
OutcomeStatus = Literal["succeeded", "failed", "rejected", "budget_exceeded", "invalid_request"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ------------------------------------------------------------------ accounting
class Spend(_Model):
    """Tokens and money a request has spent so far (cumulative along the pipeline)."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)

    def add(self, *, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0) -> Spend:
        return Spend(
            input_tokens=self.input_tokens + input_tokens,
            output_tokens=self.output_tokens + output_tokens,
            cost_usd=self.cost_usd + cost_usd,
        )


class RequestInfo(_Model):
    """What every hop carries about the original request."""

    text: str = Field(max_length=MAX_REQUEST_TEXT)
    requested_at: datetime


# ------------------------------------------------------------------ LLM structured output
class IntentAction(_Model):
    """One thing the user asked for. ``after``: indices of earlier actions it waits for."""

    action: ActionName
    target: str = Field(min_length=1, max_length=MAX_REQUEST_TEXT)  # a clause of a request
    parameters: dict[str, str] = Field(default_factory=dict)
    after: list[int] = Field(default_factory=list)


class ParsedIntent(_Model):
    """What an LLM provider returns for a request text (validated before use)."""

    actions: list[IntentAction] = Field(min_length=1, max_length=MAX_STEPS)
    confidence: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _after_points_back(self) -> ParsedIntent:
        for index, action in enumerate(self.actions):
            if any(not 0 <= dep < index for dep in action.after):
                raise ValueError(f"action {index} waits for an action that does not precede it")
        return self


class DraftStep(_Model):
    id: str = Field(pattern=STEP_ID)
    tool: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    description: str = Field(default="", max_length=500)


class PlanDraft(_Model):
    """What an LLM provider returns for an intent: steps without risk or cost (the planner
    assigns those from its own tables, never from the model)."""

    steps: list[DraftStep] = Field(min_length=1, max_length=MAX_STEPS)


# ------------------------------------------------------------------ payloads
class Intent(Payload):
    message_type = "intent.parsed"
    schema_version = 1

    request: RequestInfo
    actions: list[IntentAction] = Field(min_length=1, max_length=MAX_STEPS)
    confidence: float = Field(ge=0.0, le=1.0)
    spend: Spend = Field(default_factory=Spend)


class PlanStep(_Model):
    id: str = Field(pattern=STEP_ID)
    tool: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    risk: Risk = "low"
    cost_estimate_usd: float = Field(default=0.0, ge=0)
    description: str = Field(default="", max_length=500)


class Plan(Payload):
    """A DAG of steps. Valid by construction: unique ids, known dependencies, no cycles."""

    message_type = "plan.created"
    schema_version = 1

    request: RequestInfo
    steps: list[PlanStep] = Field(min_length=1, max_length=MAX_STEPS)
    cost_estimate_usd: float = Field(ge=0)
    spend: Spend = Field(default_factory=Spend)

    @model_validator(mode="after")
    def _dag(self) -> Plan:
        check_dag(self.steps)
        return self

    def step(self, step_id: str) -> PlanStep:
        return next(s for s in self.steps if s.id == step_id)


def check_dag(steps: list[PlanStep] | list[DraftStep]) -> None:
    """Raise ValueError unless ids are unique, dependencies exist and there is no cycle."""
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise ValueError(f"step ids are not unique: {ids}")
    deps = {s.id: list(s.depends_on) for s in steps}
    for step_id, needs in deps.items():
        unknown = sorted(set(needs) - set(ids))
        if unknown:
            raise ValueError(f"step {step_id!r} depends on unknown steps {unknown}")
    done: set[str] = set()
    while len(done) < len(ids):
        ready = [i for i in ids if i not in done and set(deps[i]) <= done]
        if not ready:
            raise ValueError(f"steps {sorted(set(ids) - done)} form a dependency cycle")
        done.update(ready)


class StepApproval(_Model):
    """The safety checker's Ed25519 approval of one task (agent_runtime.approval): it binds
    the request, step, tool, the SHA-256 of the exact arguments, the idempotency key, the
    task's message id, the approver and an expiry on the Redis server's clock. The bound
    values travel along so a refusal can say which one differs; the signature decides."""

    step_id: str = Field(pattern=STEP_ID)
    approver: str = Field(min_length=1, max_length=128)
    message_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=200)
    args_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    expires_at: float = Field(ge=0, allow_inf_nan=False, description="epoch seconds, server clock")
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


class SafetyVerdict(Payload):
    message_type = "plan.verdict"
    schema_version = 1

    decision: Literal["approved", "rejected", "needs_approval"]
    plan: Plan
    reasons: list[str] = Field(default_factory=list)
    approvals: list[StepApproval] = Field(default_factory=list)
    awaiting_approval: list[str] = Field(default_factory=list)
    approval_expires_at: datetime | None = None


class ApprovalDecision(Payload):
    """A human's answer, published by ``agent-runtime approve``/``reject``."""

    message_type = "approval.decision"
    schema_version = 1

    approved: bool
    steps: list[str] = Field(default_factory=list, description="empty: every waiting step")
    approver: str = Field(default="human", min_length=1, max_length=100)
    comment: str = Field(default="", max_length=1_000)


class ApprovalResolution(Payload):
    """The safety checker's signed answer to a decision, for the router."""

    message_type = "approval.resolved"
    schema_version = 1

    approvals: list[StepApproval] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    approver: str = "human"
    comment: str = ""


class ApprovalTimer(Payload):
    """The router's reminder to itself: steps still waiting at ``expires_at`` are rejected."""

    message_type = "approval.timer"
    schema_version = 1

    expires_at: datetime
    steps: list[str]


class Task(Payload):
    """One routed step with its approval; the executor checks the signature against exactly
    this task: (correlation id, step id, tool, args digest, idempotency key, message id,
    approver, expiry)."""

    message_type = "task.dispatched"
    schema_version = 1

    step: PlanStep
    approval: StepApproval | None
    idempotency_key: str = Field(max_length=200)
    spent_usd: float = Field(default=0.0, ge=0)


class StepResult(Payload):
    message_type = "task.result"
    schema_version = 1

    step_id: str = Field(pattern=STEP_ID)
    tool: str
    status: StepStatus
    output: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float = Field(default=0.0, ge=0)
    attempts: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    truncated: bool = False


class Outcome(Payload):
    """The end of a request, for the reporter. Sent by whichever agent ended it."""

    message_type = "plan.finished"
    schema_version = 1

    status: OutcomeStatus
    request: RequestInfo
    reasons: list[str] = Field(default_factory=list)
    plan: Plan | None = None
    results: list[StepResult] = Field(default_factory=list)
    statuses: dict[str, str] = Field(default_factory=dict, description="step id -> status")
    spend: Spend = Field(default_factory=Spend)
    finished_by: str = ""


class StepReport(_Model):
    id: str
    tool: str
    args: dict[str, Any]
    depends_on: list[str]
    risk: Risk
    status: StepStatus | Literal["not_run"]
    output: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float = 0.0
    attempts: int = 0
    truncated: bool = False


class Report(Payload):
    """What the user gets back: overall status, each step, timings, tokens and cost."""

    message_type = "report.created"
    schema_version = 1
    terminal = True

    correlation_id: str
    status: OutcomeStatus
    request: str
    reasons: list[str] = Field(default_factory=list)
    steps: list[StepReport] = Field(default_factory=list)
    requested_at: datetime
    finished_at: datetime
    total_ms: float = Field(ge=0)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_estimate_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def render_text(self) -> str:
        """The report as ``agent-runtime run`` and ``send --wait`` print it: status, the
        request, each step with its output (first lines), tokens and cost."""
        lines = [
            f"\nrequest {self.correlation_id}: {self.status.upper()} in "
            f"{self.total_ms / 1000:.2f}s",
            f"  {self.request}",
            *(f"  - {reason}" for reason in self.reasons),
        ]
        for step in self.steps:
            lines += _step_lines(step)
        lines.append(
            f"\n  tokens in/out: {self.input_tokens}/{self.output_tokens}   cost: "
            f"${self.cost_usd:.6f} (estimate ${self.cost_estimate_usd:.6f})"
        )
        return "\n".join(lines)


#: How a step's status reads in a rendered report.
STATUS_MARK = {
    "succeeded": "ok",
    "failed": "FAILED",
    "refused": "REFUSED",
    "skipped": "skipped",
    "rejected": "REJECTED",
    "cancelled": "cancelled",
    "not_run": "not run",
}
#: Lines of a step's output shown in a rendered report.
OUTPUT_LINES = 12


def _step_lines(step: StepReport) -> list[str]:
    deps = f" after {','.join(step.depends_on)}" if step.depends_on else ""
    lines = [
        f"\n  [{step.id}] {step.tool} {_args(step.args)}{deps}: "
        f"{STATUS_MARK.get(step.status, step.status)}"
        f" ({step.duration_ms:.0f} ms, {step.attempts} attempt(s))"
    ]
    if step.error:
        lines.append(f"      error: {step.error}")
    if step.output is not None:
        lines += [f"      {line}" for line in _output_lines(step.output)]
        if step.truncated:
            lines.append("      ... (output truncated)")
    return lines


def _args(args: dict[str, Any]) -> str:
    text = json.dumps(args, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def _output_lines(output: Any) -> list[str]:
    if isinstance(output, dict) and "stdout" in output:
        text = str(output.get("stdout", ""))
    elif isinstance(output, dict) and "body" in output:
        text = f"HTTP {output.get('status')} {output.get('content_type', '')}\n{output['body']}"
    elif isinstance(output, list) and all(isinstance(e, dict) and "name" in e for e in output):
        text = "\n".join(f"{e['name']}{'/' if e.get('type') == 'dir' else ''}" for e in output)
    elif isinstance(output, str):
        text = output
    else:
        text = json.dumps(output, indent=1)
    lines = text.rstrip("\n").splitlines() or [""]
    if len(lines) > OUTPUT_LINES:
        return [*lines[:OUTPUT_LINES], f"... ({len(lines) - OUTPUT_LINES} more lines)"]
    return lines


PIPELINE_PAYLOADS: tuple[type[Payload], ...] = (
    Intent,
    Plan,
    SafetyVerdict,
    ApprovalDecision,
    ApprovalResolution,
    ApprovalTimer,
    Task,
    StepResult,
    Outcome,
    Report,
)
