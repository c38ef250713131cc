"""``agent-runtime trace CORRELATION_ID [--json]``: one request's life across agents."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import anyio

from agent_runtime.cli.common import (
    add_config,
    add_redis,
    load_pipeline,
    redis_url,
    server_tools,
)
from agent_runtime.observability.redaction import redact
from agent_runtime.observability.trace import load_trace, render_trace
from agent_runtime.transport.keys import Keys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "trace",
        help="show the timeline of one request (every message, timings, outcome)",
        description="Rebuild the life of request CORRELATION_ID from its trace record (kept "
        "trace_ttl seconds) and the dead-letter streams: every message with "
        "from -> to, type, start offset, handler duration, deliveries and outcome.",
    )
    parser.add_argument(
        "correlation_id",
        metavar="CORRELATION_ID",
        type=_uuid,
        help="the request's correlation id (printed by 'send')",
    )
    parser.add_argument("--json", action="store_true", help="print the steps as a JSON list")
    add_config(parser)
    add_redis(parser)
    parser.set_defaults(func=run)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a correlation id (UUID)") from None


def run(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    events = redact(anyio.run(fetch, url, pipeline.config.keys, args.correlation_id))
    if args.json:
        print(json.dumps(events, indent=2))
    else:
        print(render_trace(args.correlation_id, events))
    return 0 if events else 1


async def fetch(url: str, keys: Keys, correlation_id: str) -> list[dict[str, Any]]:
    async with server_tools(url, keys) as tools:
        return await load_trace(tools.traces, tools.dead_letters, correlation_id)
