"""``agent-runtime status [--json]``: streams, groups, consumers, lag, pending, dead letters,
breakers and live workers, in one snapshot."""

from __future__ import annotations

import json
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
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.observability.redaction import redact
from agent_runtime.observability.status import collect_status, render_status


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "status",
            callback=runs(run),
            short_help="show streams, lag, pending, dead letters, breakers and workers",
            help="One snapshot of the runtime under the config's key prefix: every inbox "
            "with its group (lag, pending, oldest pending age) and consumers (idle "
            "time), dead-letter streams by reason, breaker states, the fleet rate limits of "
            "llm.accounts and of agent types' rate_limit (use now against the limit, calls "
            "that waited), live workers.",
            params=[json_option("print the snapshot as JSON"), *config_and_redis()],
        )
    )


def run(args: Args) -> int:
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    status = anyio.run(snapshot, pipeline, url)
    clean = redact(status)
    warnings = pipeline.warnings()
    if warnings:
        clean["warnings"] = warnings
    text = "\n".join([*(f"WARNING: {w}" for w in warnings), render_status(clean)])
    print(json.dumps(clean, indent=2) if args.json else text)
    return 0


async def snapshot(pipeline: Pipeline, url: str) -> dict[str, Any]:
    keys = pipeline.config.keys
    inboxes = [s for name in pipeline.agents for s in pipeline.routing.inboxes(name)]
    async with server_tools(url, keys) as tools:
        return await collect_status(
            tools.reader, tools.dead_letters, keys, inboxes, _limits(pipeline)
        )


def _limits(pipeline: Pipeline) -> dict[str, Any]:
    """The fleet rate limits: LLM accounts, and agent types' ``rate_limit`` (``agent.NAME``)."""
    limits: dict[str, Any] = dict(pipeline.config.llm.accounts)
    for name, spec in pipeline.config.agents.items():
        if spec.rate_limit is not None:
            limits[f"agent.{name}"] = spec.rate_limit
    return limits
