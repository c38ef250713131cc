"""``agent-runtime trace CORRELATION_ID [--json]``: one request's life across agents."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import click

from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    redis_url,
    runs,
    server_tools,
)
from agent_runtime.observability.redaction import redact
from agent_runtime.observability.trace import load_trace, render_trace
from agent_runtime.transport.keys import Keys


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "trace",
            callback=runs(run),
            short_help="show the timeline of one request (every message, timings, outcome)",
            help="Rebuild the life of request CORRELATION_ID (printed by 'send') from its trace "
            "record (kept trace_ttl seconds) and the dead-letter streams: every message with "
            "from -> to, type, start offset, handler duration, deliveries and outcome.",
            params=[
                click.Argument(["correlation_id"], metavar="CORRELATION_ID", type=CorrelationId()),
                json_option("print the steps as a JSON list"),
                *config_and_redis(),
            ],
        )
    )


class CorrelationId(click.ParamType[str]):
    """A UUID, normalised; anything else is a usage error (exit 2)."""

    name = "uuid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            self.fail(f"{value!r} is not a correlation id (UUID)", param, ctx)


def run(args: Args) -> int:
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
