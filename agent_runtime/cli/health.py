"""``agent-runtime health [--json]`` and ``health --agent NAME --consumer C``: worker liveness
from heartbeats. Exit 0 healthy, 1 unhealthy (usable as a container HEALTHCHECK)."""

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
from agent_runtime.observability.health import check_all, check_one, render_health
from agent_runtime.observability.redaction import redact


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "health",
            callback=runs(run),
            short_help="check that workers are alive (exit 1 if not)",
            help="List live workers from their heartbeats. Exits 1 when an agent type of "
            "the config (replicas >= 1) has no live worker, or, with --agent and "
            "--consumer, when that one worker is not live.",
            params=[
                click.Option(["--agent"], help="check only this agent type's worker ..."),
                click.Option(
                    ["--consumer"], help="... with this consumer name (NAME-HOSTNAME-SLOT)"
                ),
                json_option("print the result as JSON"),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    if bool(args.agent) != bool(args.consumer):
        raise SystemExit("agent-runtime health: --agent and --consumer go together")
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    result, ok, text = anyio.run(_check, pipeline, url, args.agent, args.consumer)
    if pipeline.warnings():  # healthy or not, an insecure config is said
        result["warnings"] = pipeline.warnings()
        text = "\n".join([*(f"WARNING: {w}" for w in pipeline.warnings()), text])
    print(json.dumps(redact(result), indent=2) if args.json else redact(text))
    return 0 if ok else 1


async def _check(
    pipeline: Pipeline, url: str, agent: str | None, consumer: str | None
) -> tuple[dict[str, Any], bool, str]:
    keys = pipeline.config.keys
    async with server_tools(url, keys) as tools:
        if agent and consumer:
            beat = await check_one(tools.reader, keys, agent, consumer)
            text = (
                f"ok: {agent}/{consumer} is live (pid {beat.get('pid')})"
                if beat
                else f"UNHEALTHY: no live heartbeat for {agent}/{consumer}"
            )
            return {"ok": beat is not None, "worker": beat}, beat is not None, text
        expected = [n for n, spec in pipeline.config.agents.items() if spec.replicas > 0]
        health = await check_all(tools.reader, keys, expected)
        return health.as_dict(), health.ok, render_health(health)
