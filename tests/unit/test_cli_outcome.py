"""How ``run`` and ``send --wait`` print a terminal reply and which exit status it means, for
any pipeline: the CLI knows no pipeline's payload models, a reply that carries its own verdict
(``ok``) and text (``render_text``) is printed and judged by them."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import ClassVar

from agent_runtime.cli.failures import EXIT_NOT_OK, EXIT_OK
from agent_runtime.cli.outcome import OutcomeReport, print_reply
from agent_runtime.codec import Decoded
from protocols.base import Payload
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import Report, StepReport


class Verdict(Payload):
    """A custom pipeline's terminal reply that judges its request itself."""

    message_type: ClassVar[str] = "custom.verdict"
    terminal: ClassVar[bool] = True
    passed: bool

    @property
    def ok(self) -> bool:
        return self.passed

    def render_text(self) -> str:
        return f"verdict: {'pass' if self.passed else 'FAIL'}"


def _reply(payload: Payload) -> Decoded:
    message = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        from_agent="judge",
        to_agent="client",
        payload=payload.model_dump(mode="json"),
        timestamp=utcnow(),
    )
    return Decoded(message, payload)


def _print(payload: Payload, as_json: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = print_reply(_reply(payload), out, as_json="payload" if as_json else None)
    return code, out.getvalue()


def test_a_custom_reply_with_its_own_verdict_is_printed_and_judged_by_it() -> None:
    assert _print(Verdict(passed=True)) == (EXIT_OK, "verdict: pass\n")
    assert _print(Verdict(passed=False)) == (EXIT_NOT_OK, "verdict: FAIL\n")
    code, text = _print(Verdict(passed=False), as_json=True)
    assert code == EXIT_NOT_OK and json.loads(text) == {"passed": False}  # loadable as is


def test_the_default_pipelines_report_prints_its_steps_and_cost() -> None:
    now = datetime.now(UTC)
    step = StepReport(
        id="s1", tool="shell", args={"argv": ["echo", "hi"]}, depends_on=[], risk="low",
        status="succeeded",
        output={"stdout": "hi\n"}, attempts=1,
    )  # fmt: skip
    report = Report(
        correlation_id="c1", status="failed", request="run echo hi", reasons=["s2 failed"],
        steps=[step], requested_at=now, finished_at=now, total_ms=1500, cost_usd=0.25,
    )  # fmt: skip
    code, text = _print(report)
    assert code == EXIT_NOT_OK
    lines = text.splitlines()
    assert lines[:4] == ["", "request c1: FAILED in 1.50s", "  run echo hi", "  - s2 failed"]
    assert '  [s1] shell {"argv":["echo","hi"]}: ok (0 ms, 1 attempt(s))' in lines
    assert "      hi" in lines and "$0.250000" in lines[-1]
    assert Report.model_validate(json.loads(_print(report, as_json=True)[1])) == report


def test_a_reply_without_a_verdict_is_not_an_outcome_report() -> None:
    failed = RequestFailed(status="failed", reason="r", agent="a")
    assert not isinstance(failed, OutcomeReport)
    code, text = _print(failed, as_json=True)
    assert code == EXIT_NOT_OK and json.loads(text)["message_type"] == "request.failed"
