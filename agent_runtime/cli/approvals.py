"""``agent-runtime approvals [--json]``: the steps waiting for a human decision, earliest expiry
first (request, step, tool, arguments, risk, expiry on the server's clock). Answer them with
``agent-runtime approve``/``reject``; ``cancel`` ends a request instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anyio
import click

from agent_runtime.approval import WaitingStep, waiting_approvals
from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    open_connection,
    redis_url,
    runs,
)
from agent_runtime.client import Client
from agent_runtime.observability.redaction import redact
from agent_runtime.observability.tables import format_table

#: Characters of a step's arguments shown in the table (``--json`` shows them whole).
ARGS_WIDTH = 40


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "approvals",
            callback=runs(run),
            short_help="list the steps waiting for a human approval",
            help="List every step that the safety policy holds for a human decision and "
            "that has not expired (on the Redis server's clock), earliest expiry first: "
            "request (correlation id), step, tool, arguments, risk, expiry. Decide with "
            "'agent-runtime approve/reject CORRELATION_ID [--step ID]'.",
            params=[json_option("print the list as JSON"), *config_and_redis()],
        )
    )


def run(args: Args) -> int:
    pipeline = load_pipeline(args)
    client = Client(open_connection(redis_url(args, pipeline)).redis, pipeline)
    steps: list[WaitingStep] = anyio.run(_list, client)
    rows = redact([step.as_json() for step in steps])
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render(rows))
    return 0


async def _list(client: Client) -> list[WaitingStep]:
    async with client:
        return await waiting_approvals(client)


def render(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no step is waiting for approval"
    table = [
        [
            row["correlation_id"],
            row["step"],
            row["tool"],
            _short(json.dumps(row["args"], sort_keys=True)),
            row["risk"],
            _when(str(row["expires_at"])),
        ]
        for row in rows
    ]
    header = ["REQUEST", "STEP", "TOOL", "ARGS", "RISK", "EXPIRES (UTC)"]
    return format_table(header, table)


def _short(text: str) -> str:
    return text if len(text) <= ARGS_WIDTH else text[: ARGS_WIDTH - 3] + "..."


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
