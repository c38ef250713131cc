"""``agent-runtime approvals [--json]``: the steps waiting for a human decision, earliest expiry
first (request, step, tool, arguments, risk, expiry on the server's clock). Answer them with
``agent-runtime approve``/``reject``; ``cancel`` ends a request instead."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import anyio

from agent_runtime.approval import WaitingStep, waiting_approvals
from agent_runtime.cli._table import format_table
from agent_runtime.cli.common import (
    add_config,
    add_redis,
    load_pipeline,
    open_connection,
    redis_url,
)
from agent_runtime.client import Client
from agent_runtime.observability.redaction import redact

#: Characters of a step's arguments shown in the table (``--json`` shows them whole).
ARGS_WIDTH = 40


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "approvals",
        help="list the steps waiting for a human approval",
        description="List every step that the safety policy holds for a human decision and "
        "that has not expired (on the Redis server's clock), earliest expiry first: request "
        "(correlation id), step, tool, arguments, risk, expiry. Decide with 'agent-runtime "
        "approve/reject CORRELATION_ID [--step ID]'.",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    add_config(parser)
    add_redis(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
