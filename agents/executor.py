"""executor: ``task.dispatched`` -> runs the step's tool -> ``task.result`` (to the router).

Before anything runs, the task's approval must carry a valid Ed25519 signature of the safety
checker for exactly this task -- request, step, tool, arguments' digest, idempotency key,
message id, approver -- and must not have expired on the Redis server's clock; then the
executor records its use (one inbox entry per approval, agents/approvals.py). A missing,
forged, mismatched, expired or reused approval is refused and logged, and the tool is never
called. The executor holds only the public key: it can check approvals, never make one.

Tools are plugged in by dotted path (``tools: {name: {class: ..., options: {...}}}``) and
imported through the registry allow-list. Every call goes through :func:`invoke_tool` under
the call policy ``tool.NAME`` of the worker's resilience policies (``runtime.policies``:
retry, timeout, circuit breaker shared by the fleet; see docs/policies.md); ``BreakerOpen`` and
``DeadlineExceeded`` propagate to the policy middleware (delayed redelivery, ``expired``).
Without worker policies (the harness, unit tests) a local policy built from ``attempts``,
``retry_backoff`` and ``step_timeout`` is used, without a breaker. The step's idempotency key
``CID:STEP`` is passed to the tool.

Cancellation (``agent-runtime cancel``, agent_runtime/cancel.py): right before a tool starts,
the request's cancellation mark is checked and marked ``open`` in one optimistic transaction
(:func:`agent_runtime.cancel.start_tool`), so no tool starts once a cancel is recorded; the
task is then acked with no result (the requester already has the ``cancelled`` reply). While
a tool runs the mark is polled every ``cancel_poll`` seconds and a cancelled request's call is
cancelled, unless the tool class says ``cancellable = False`` (``deploy``: never cut halfway).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_runtime.agent import Agent, MessageContext
from agent_runtime.approval import PUBLIC_KEY_ENV, ApprovalVerifier, verifier
from agent_runtime.cancel import cancellation, start_tool
from agent_runtime.config.registry import import_object
from agent_runtime.errors import BreakerOpen, ConfigError, DeadlineExceeded, Skip
from agent_runtime.policies import CallStats, Policy, PolicySpec, RetryPolicy
from agent_runtime.policies.errors import is_transient
from agents import approvals
from agents.common import budget_reason, over_budget
from agents.executors.base import Tool, ToolContext, ToolError, ToolOutput, TransientToolError
from protocols.pipeline import StepResult, Task


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field(alias="class", description="'package.module:ToolClass'")
    options: dict[str, Any] = Field(default_factory=dict)


DEFAULT_TOOLS = {
    "file_list": {"class": "agents.executors.files:FileList"},
    "file_read": {"class": "agents.executors.files:FileRead"},
    "shell": {"class": "agents.executors.shell:Shell"},
    "http": {"class": "agents.executors.http:Http"},
    "python": {"class": "agents.executors.python:Python"},
    "deploy": {"class": "agents.executors.deploy:Deploy"},
}


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sandbox: str = Field(default=".", description="root of file tools and shell working dir")
    tools: dict[str, ToolSpec] = Field(
        default_factory=lambda: {k: ToolSpec.model_validate(v) for k, v in DEFAULT_TOOLS.items()}
    )
    allowed_modules: list[str] = Field(
        default_factory=list, description="module prefixes of tools beyond 'agents'"
    )
    step_timeout: float = Field(default=60.0, gt=0, description="seconds per tool attempt")
    attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="tries on transient tool errors when the worker supplies no policies "
        "(under a worker: policies.calls['tool.NAME'].retry)",
    )
    retry_backoff: float = Field(default=0.2, ge=0, description="first retry delay (no policies)")
    cancel_poll: float = Field(
        default=0.5, gt=0, description="seconds between checks of a running step's cancellation"
    )
    cancel_mark_ttl: int = Field(
        default=7 * 24 * 3600, ge=60, description="seconds a request's started-tools mark is kept"
    )
    give_up_after: int = Field(
        default=3,
        ge=1,
        description="deliveries of a task whose tool still fails transiently (a step "
        "timeout included) once the call policy's retries are spent: before it, the task is "
        "redelivered with the worker's backoff (within the request's deadline); on it, the "
        "step fails",
    )


def build_tools(config: ExecutorConfig) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for name, spec in config.tools.items():
        cls = import_object(spec.class_path, config.allowed_modules)
        try:
            tools[name] = cls(cls.Options.model_validate(spec.options))
        except (AttributeError, ValidationError, TypeError) as exc:
            raise ConfigError(f"tools.{name} ({spec.class_path}): {exc}") from exc
    return tools


async def invoke_tool(
    tool: Tool, args: dict[str, Any], context: ToolContext, seconds: float
) -> ToolOutput:
    """One tool call under a timeout. The single seam for retry/timeout/breaker policies."""
    try:
        with anyio.fail_after(seconds):
            return await tool.run(args, context)
    except TimeoutError:
        raise TransientToolError(f"step timed out after {seconds}s") from None


class Executor(Agent[ExecutorConfig]):
    Config = ExecutorConfig
    consumes = (Task,)
    produces = (StepResult,)
    secrets: ClassVar[tuple[str, ...]] = (PUBLIC_KEY_ENV,)

    _tools: dict[str, Tool] | None = None
    _verifier: ApprovalVerifier | None = None
    _sandbox: Path | None = None
    _local_policies: dict[str, Policy] | None = None

    @property
    def sandbox(self) -> Path:
        if self._sandbox is None:
            self._sandbox = Path(self.config.sandbox).resolve()
        return self._sandbox

    async def start(self) -> None:
        self.tools  # noqa: B018 - import and check every tool before the first task
        self.verifier  # noqa: B018
        if not self.sandbox.is_dir():
            raise ConfigError(f"executor sandbox {self.config.sandbox!r} is not a directory")

    @property
    def tools(self) -> dict[str, Tool]:
        if self._tools is None:
            self._tools = build_tools(self.config)
        return self._tools

    @property
    def verifier(self) -> ApprovalVerifier:
        if self._verifier is None:
            self._verifier = verifier()
        return self._verifier

    def tool_policy(self, tool: str) -> Policy:
        """The worker's ``tool.NAME`` call policy, else a local one from this config."""
        name = f"tool.{tool}"
        policies = self.runtime.policies
        if policies is not None:
            return policies.call(name)
        if self._local_policies is None:
            self._local_policies = {}
        policy = self._local_policies.get(name)
        if policy is None:
            retry = RetryPolicy(
                attempts=self.config.attempts, backoff=self.config.retry_backoff, jitter=0
            )  # invoke_tool applies step_timeout to each attempt
            spec = PolicySpec(retry=retry)
            policy = self._local_policies[name] = Policy(name, spec, retryable=is_transient)
        return policy

    async def handle(self, ctx: MessageContext) -> None:
        task = ctx.payload
        assert isinstance(task, Task)
        step = task.step
        now = await self.runtime.clock.now()
        problem = approvals.problem(self.verifier, ctx, task, now)
        if problem is not None:
            self.refuse(ctx, task, problem)
            return
        spent = task.spent_usd + step.cost_estimate_usd
        if over_budget(ctx, spent):
            ctx.send(
                StepResult(
                    step_id=step.id,
                    tool=step.tool,
                    status="cancelled",
                    error=budget_reason(ctx, spent, "spent plus this step's estimate"),
                )
            )
            return
        problem = await approvals.use(self.runtime, ctx, task, now)
        if problem is not None:
            self.refuse(ctx, task, problem)
            return
        cid = str(ctx.message.correlation_id)
        keys, state = self.runtime.keys, self.runtime.state
        cancelled = await start_tool(state, keys, cid, self.config.cancel_mark_ttl)
        if cancelled is not None:
            ctx.log.info("task_cancelled", step_id=step.id, by=cancelled.by)
            raise Skip
        result = await self.run_cancellable(ctx, task)
        if result is None:
            ctx.log.info("tool_cancelled", step_id=step.id, tool=step.tool)
            raise Skip
        ctx.send(result)

    async def run_cancellable(self, ctx: MessageContext, task: Task) -> StepResult | None:
        """:meth:`run_step`, cut short (None) when the request is cancelled meanwhile and
        the tool allows it."""
        if not getattr(self.tools.get(task.step.tool), "cancellable", True):
            return await self.run_step(ctx, task)
        with anyio.CancelScope() as scope:
            watch = self._watch(str(ctx.message.correlation_id), scope)
            watcher = asyncio.get_running_loop().create_task(watch)
            try:
                return await self.run_step(ctx, task)
            finally:
                watcher.cancel()
        return None

    async def _watch(self, cid: str, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` once the request is cancelled (a failed read: try again)."""
        while True:
            await anyio.sleep(self.config.cancel_poll)
            try:
                if await cancellation(self.runtime.state, self.runtime.keys, cid):
                    scope.cancel()
                    return
            except Exception as exc:  # the server unreachable: the tool goes on meanwhile
                self.runtime.log.debug("cancel_check_failed", error=repr(exc))

    def refuse(self, ctx: MessageContext, task: Task, problem: str) -> None:
        step = task.step
        ctx.log.warning("task_refused", step_id=step.id, tool=step.tool, reason=problem)
        ctx.send(
            StepResult(
                step_id=step.id, tool=step.tool, status="refused", error=f"refused: {problem}"
            )
        )

    async def run_step(self, ctx: MessageContext, task: Task) -> StepResult:
        step = task.step
        started, clock = datetime.now(UTC), time.perf_counter()
        tool = self.tools.get(step.tool)
        base: dict[str, Any] = {"step_id": step.id, "tool": step.tool, "started_at": started}
        if tool is None:
            return StepResult(
                **base,
                status="failed",
                finished_at=datetime.now(UTC),
                error=f"this executor has no tool {step.tool!r}",
            )
        context = ToolContext(
            correlation_id=str(ctx.message.correlation_id),
            step_id=step.id,
            idempotency_key=task.idempotency_key,
            sandbox=self.sandbox,
            deadline=ctx.message.deadline,
        )
        output, error, attempts = await self.call_tool(tool, task, context, ctx.delivery_count)
        elapsed = (time.perf_counter() - clock) * 1000
        done = {
            **base,
            "finished_at": datetime.now(UTC),
            "duration_ms": elapsed,
            "attempts": attempts,
        }
        if output is None:
            ctx.log.info("step_failed", step_id=step.id, tool=step.tool, error=error)
            return StepResult(**done, status="failed", error=error)
        return StepResult(
            **done,
            status="succeeded",
            output=output.output,
            truncated=output.truncated,
            cost_usd=output.cost_usd or step.cost_estimate_usd,
        )

    async def call_tool(
        self, tool: Tool, task: Task, context: ToolContext, delivery: int = 1
    ) -> tuple[ToolOutput | None, str, int]:
        """(output or None, error, attempts): the tool under its call policy. A transient
        failure (a step timeout included) once the policy's retries are spent propagates, so
        the worker redelivers the task, until delivery ``give_up_after``; then, like any other
        tool error, it fails the step. An open breaker or a passed deadline propagates to the
        policy middleware."""
        step, stats = task.step, CallStats()
        policy = self.tool_policy(step.tool)
        try:
            output = await policy.run(
                invoke_tool, tool, step.args, context, self.config.step_timeout, stats=stats
            )
        except (BreakerOpen, DeadlineExceeded):
            raise
        except TimeoutError:  # the policy's own timeout cut the call
            late = TransientToolError(f"step timed out (policy {policy.name})")
            return None, self._transient(late, delivery), stats.attempts
        except TransientToolError as exc:
            return None, self._transient(exc, delivery), stats.attempts
        except ToolError as exc:
            return None, str(exc), stats.attempts
        return output, "", stats.attempts

    def _transient(self, exc: TransientToolError, delivery: int) -> str:
        """Raise ``exc`` (the worker redelivers the task) before delivery ``give_up_after``;
        on it, the reason the step failed."""
        if delivery < self.config.give_up_after:
            raise exc
        return str(exc)
