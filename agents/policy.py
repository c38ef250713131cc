"""The safety policy (``configs/policy.yaml``) and its evaluation of a plan.

Every step is checked against: the tool allow- and deny-lists, deny patterns searched in
every string argument, the shell command list, the http host list, the risk ceiling and the
step count. Any violation rejects the whole plan (nothing runs). The estimate plus what was
already spent must fit both the policy's per-request budget and the request's own budget.
Steps whose tool is listed in ``approval_required`` (or whose risk reaches ``approval_risk``)
wait for a human.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent_runtime.errors import ConfigError
from agents.urls import BadUrl, parse_url
from protocols.pipeline import RISK_ORDER, Plan, PlanStep, Risk


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShellPolicy(_Strict):
    commands: list[str] = Field(
        default_factory=lambda: ["uptime", "date", "whoami", "uname", "df", "hostname", "echo"]
    )
    deny_args: list[str] = Field(default_factory=list, description="regexes")


class HttpPolicy(_Strict):
    hosts: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD"])


class ToolLists(_Strict):
    allow: list[str] = Field(
        default_factory=lambda: ["file_list", "file_read", "shell", "http", "python", "deploy"]
    )
    deny: list[str] = Field(default_factory=list)


class SafetyPolicy(_Strict):
    """What the safety checker lets through (``configs/policy.yaml``); not to be confused with
    a call policy (``agent_runtime.policies.Policy``: retry, timeout, breaker)."""

    tools: ToolLists = Field(default_factory=ToolLists)
    deny_arg_patterns: list[str] = Field(default_factory=list)
    shell: ShellPolicy = Field(default_factory=ShellPolicy)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    risk_ceiling: Risk = "high"
    approval_required: list[str] = Field(default_factory=lambda: ["deploy"])
    approval_risk: Risk | None = None
    approval_ttl: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    budget_usd: float | None = Field(default=1.0, ge=0)
    max_steps: int = Field(default=12, ge=1, le=16)

    @field_validator("deny_arg_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            re.compile(pattern)
        return value


def load_policy(path: str | Path) -> SafetyPolicy:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return SafetyPolicy.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid policy: {exc}") from exc


@dataclass
class Evaluation:
    rejections: list[str] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)
    over_budget: str | None = None


def evaluate(policy: SafetyPolicy, plan: Plan, *, budget_usd: float | None) -> Evaluation:
    result = Evaluation()
    if len(plan.steps) > policy.max_steps:
        result.rejections.append(
            f"plan has {len(plan.steps)} steps, policy allows {policy.max_steps}"
        )
    for step in plan.steps:
        result.rejections.extend(
            f"step {step.id} ({step.tool}): {problem}" for problem in step_problems(policy, step)
        )
        if needs_approval(policy, step):
            result.awaiting.append(step.id)
    total = plan.spend.cost_usd + plan.cost_estimate_usd
    limits = [b for b in (policy.budget_usd, budget_usd) if b is not None]
    if limits and total > min(limits) + 1e-12:
        result.over_budget = (
            f"estimated cost ${total:.6f} (spent plus plan estimate) is over "
            f"the budget ${min(limits):.6f}"
        )
    return result


def needs_approval(policy: SafetyPolicy, step: PlanStep) -> bool:
    if step.tool in policy.approval_required:
        return True
    return (
        policy.approval_risk is not None
        and RISK_ORDER[step.risk] >= RISK_ORDER[policy.approval_risk]
    )


def step_problems(policy: SafetyPolicy, step: PlanStep) -> list[str]:
    problems: list[str] = []
    if step.tool in policy.tools.deny or step.tool not in policy.tools.allow:
        problems.append("tool is not allowed")
    if RISK_ORDER[step.risk] > RISK_ORDER[policy.risk_ceiling]:
        problems.append(f"risk {step.risk} is above the ceiling {policy.risk_ceiling}")
    for text in _strings(step.args):
        hit = next((p for p in policy.deny_arg_patterns if re.search(p, text)), None)
        if hit is not None:
            problems.append(f"argument {text[:80]!r} matches denied pattern {hit!r}")
    if step.tool == "shell":
        problems.extend(_shell_problems(policy.shell, step.args))
    if step.tool == "http":
        problems.extend(_http_problems(policy.http, step.args))
    return problems


def _shell_problems(policy: ShellPolicy, args: dict[str, Any]) -> list[str]:
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return ["argv must be a non-empty list of strings"]
    problems = []
    if argv[0] not in policy.commands:
        problems.append(f"command {argv[0]!r} is not on the allow-list")
    for arg in argv[1:]:
        if any(re.search(p, arg) for p in policy.deny_args):
            problems.append(f"argument {arg!r} is denied")
    return problems


def _http_problems(policy: HttpPolicy, args: dict[str, Any]) -> list[str]:
    """Read through the http tool's own parser (agents/urls.py): what it cannot read is
    refused here with its reason, never raised."""
    try:
        url = parse_url(args.get("url"))
    except BadUrl as exc:
        return [f"url refused: {exc}"]
    problems = []
    if not url.allowed(policy.hosts):
        problems.append(f"host {url.host!r} is not on the allow-list")
    if str(args.get("method", "GET")).upper() not in policy.methods:
        problems.append(f"method {args.get('method')!r} is not allowed")
    return problems


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []
