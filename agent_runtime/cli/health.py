"""``agent-runtime health [--json]`` and ``health --agent NAME --consumer C``: worker liveness
from heartbeats. Exit 0 healthy, 1 unhealthy (usable as a container HEALTHCHECK)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from agent_runtime.cli.common import (
    add_config,
    add_redis,
    load_pipeline,
    redis_url,
    server_tools,
)
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.observability.health import check_all, check_one, render_health
from agent_runtime.observability.redaction import redact


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "health",
        help="check that workers are alive (exit 1 if not)",
        description="List live workers from their heartbeats. Exits 1 when an agent type of "
        "the config (replicas >= 1) has no live worker, or, with --agent and "
        "--consumer, when that one worker is not live.",
    )
    parser.add_argument("--agent", help="check only this agent type's worker ...")
    parser.add_argument("--consumer", help="... with this consumer name (NAME-HOSTNAME-SLOT)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config(parser)
    add_redis(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
