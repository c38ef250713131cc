"""reporter: ``plan.finished`` -> the :class:`~protocols.pipeline.Report`, written to the
request's reply stream and to the shared reports stream.

Step outputs are cut to ``max_output_chars`` each (marked ``truncated``) so a report always
fits in one message. Every report is passed through the secret redaction of
:mod:`agent_runtime.observability.redaction` before it is sent: secrets of the process
environment, ``password=...``-style values, URL passwords, bearer tokens and values under
secret-named fields are masked in step arguments, outputs, errors and reasons.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.agent import Agent, MessageContext
from agent_runtime.observability.redaction import Redactor, redact
from protocols.pipeline import Outcome, Report, StepReport, StepResult

NOT_RUN_STATUSES = frozenset({"skipped", "rejected", "cancelled"})


class ReporterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_output_chars: int = Field(default=8_000, ge=100, le=1_000_000)
    publish_reports: bool = Field(default=True, description="also write to the reports stream")
    reports_maxlen: int = Field(
        default=10_000, ge=1, description="the reports stream keeps about this many reports"
    )


class Reporter(Agent[ReporterConfig]):
    Config = ReporterConfig
    consumes = (Outcome,)
    produces = (Report,)

    async def handle(self, ctx: MessageContext) -> None:
        outcome = ctx.payload
        assert isinstance(outcome, Outcome)
        report = self.redacted(self.build(str(ctx.message.correlation_id), outcome))
        ctx.log.info(
            "report_built",
            status=report.status,
            steps=len(report.steps),
            total_ms=round(report.total_ms, 1),
        )
        if ctx.message.reply_to is not None:
            ctx.reply(report)
        if self.config.publish_reports:
            # Capped with XADD MAXLEN ~: no consumer group reads the reports stream (operators
            # and tools read it with XRANGE/XREAD), so trimming cannot drop a pending entry.
            ctx.send_to_stream(
                self.runtime.keys.reports(), report, maxlen=self.config.reports_maxlen
            )

    def redacted(self, report: Report) -> Report:
        """``report`` with secrets masked (the worker's redactor, ``runtime.redactor``, when
        the process supplies one, else the process environment's)."""
        redactor: Redactor | None = self.runtime.redactor
        data = report.model_dump(mode="json")
        clean = redact(data, redactor)
        return report if clean == data else Report.model_validate_json(json.dumps(clean))

    def build(self, correlation_id: str, outcome: Outcome) -> Report:
        finished = datetime.now(UTC)
        results = {r.step_id: r for r in outcome.results}
        steps = [
            self._step(step.model_dump(), results.get(step.id), outcome.statuses.get(step.id))
            for step in (outcome.plan.steps if outcome.plan else [])
        ]
        return Report(
            correlation_id=correlation_id,
            status=outcome.status,
            request=outcome.request.text,
            reasons=outcome.reasons,
            steps=steps,
            requested_at=outcome.request.requested_at,
            finished_at=finished,
            total_ms=max((finished - outcome.request.requested_at).total_seconds() * 1000, 0.0),
            input_tokens=outcome.spend.input_tokens,
            output_tokens=outcome.spend.output_tokens,
            cost_usd=round(outcome.spend.cost_usd, 9),
            cost_estimate_usd=outcome.plan.cost_estimate_usd if outcome.plan else 0.0,
        )

    def _step(
        self, step: dict[str, Any], result: StepResult | None, status: str | None
    ) -> StepReport:
        base = {k: step[k] for k in ("id", "tool", "args", "depends_on", "risk")}
        if result is None:
            final = status if status in NOT_RUN_STATUSES else "not_run"
            return StepReport(**base, status=final)
        output, cut = _cap(result.output, self.config.max_output_chars)
        return StepReport(
            **base,
            status=result.status,
            output=output,
            error=result.error,
            started_at=result.started_at,
            finished_at=result.finished_at,
            duration_ms=result.duration_ms,
            attempts=result.attempts,
            truncated=result.truncated or cut,
        )


def _cap(output: Any, limit: int) -> tuple[Any, bool]:
    text = output if isinstance(output, str) else json.dumps(output)
    if len(text) <= limit:
        return output, False
    return text[:limit], True
