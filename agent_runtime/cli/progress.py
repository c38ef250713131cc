"""Live progress and the final report of ``agent-runtime run``, as text.

Progress lines come from the request's trace list (one JSON record per handled message,
written by the workers in their commit pipeline): time since publish, agent, message type,
what it produced, and how long the handler took.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from agent_runtime.worker.delivery import expand_trace
from protocols.pipeline import Report

STATUS_MARK = {
    "succeeded": "ok",
    "failed": "FAILED",
    "refused": "REFUSED",
    "skipped": "skipped",
    "rejected": "REJECTED",
    "cancelled": "cancelled",
    "not_run": "not run",
}
OUTPUT_LINES = 12


def hop_line(record: bytes, published_ms: int) -> str | None:
    """One trace record as a progress line (None for the client's own publish record, or a
    record that is not a JSON object)."""
    get = {k.decode(): v.decode(errors="replace") for k, v in expand_trace(record).items()}
    if not get:
        return None
    if get.get("outcome") == "published" and get.get("message_type") == "user.request":
        return None
    at = (int(get.get("finished_ms", published_ms) or published_ms) - published_ms) / 1000
    agent = get.get("agent", "?")
    outcome = get.get("outcome", "")
    if outcome == "published":
        return f"  +{at:6.2f}s  {agent:<15} published {get.get('message_type', '')}"
    try:
        outputs = json.loads(get.get("outputs") or "[]")
    except ValueError:
        outputs = []
    produced = ", ".join(sorted({f"{o.get('message_type')}->{o.get('to')}" for o in outputs}))
    duration = float(get.get("duration_ms") or 0)
    line = (
        f"  +{at:6.2f}s  {agent:<15} {get.get('message_type', ''):<18} "
        f"{duration:8.1f} ms  {outcome}"
    )
    if produced:
        line += f"  => {produced}"
    if get.get("reason"):
        line += f"  ({get['reason']})"
    return line


def print_report(report: Report, out: TextIO) -> None:
    print(
        f"\nrequest {report.correlation_id}: {report.status.upper()} in "
        f"{report.total_ms / 1000:.2f}s",
        file=out,
    )
    print(f"  {report.request}", file=out)
    for reason in report.reasons:
        print(f"  - {reason}", file=out)
    for step in report.steps:
        deps = f" after {','.join(step.depends_on)}" if step.depends_on else ""
        print(
            f"\n  [{step.id}] {step.tool} {_args(step.args)}{deps}: "
            f"{STATUS_MARK.get(step.status, step.status)}"
            f" ({step.duration_ms:.0f} ms, {step.attempts} attempt(s))",
            file=out,
        )
        if step.error:
            print(f"      error: {step.error}", file=out)
        if step.output is not None:
            for line in _output_lines(step.output):
                print(f"      {line}", file=out)
            if step.truncated:
                print("      ... (output truncated)", file=out)
    print(
        f"\n  tokens in/out: {report.input_tokens}/{report.output_tokens}   cost: "
        f"${report.cost_usd:.6f} (estimate ${report.cost_estimate_usd:.6f})",
        file=out,
    )


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
