"""``agent-runtime validate [CONFIG]``: load and check a pipeline without starting anything."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

import click

from agent_runtime.cli.common import (
    Args,
    config_option,
    json_option,
    runs,
)
from agent_runtime.cli.failures import EXIT_USAGE
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.validation import problems
from agent_runtime.observability.tables import UNLIMITED, format_table, width


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "validate",
            callback=runs(run),
            short_help="check a pipeline config (exit 0 if valid, 2 if not)",
            help="Load the pipeline exactly as a worker does and report every problem at "
            "once, each with file:line: unknown keys, class paths against the "
            "allow-list, each agent's typed config block (file paths in it are relative "
            "to the config file), every llm: block (provider, keys, and the API-key "
            "environment variable its provider needs), worker settings, routes, a "
            "producer for every consumed message type, plug-in paths that would shadow "
            "agent_runtime, agents or protocols. Prints a summary and OK, or the "
            "problems, one per line (exit 2). CONFIG: same as --config.",
            params=[
                click.Argument(["config_file"], required=False, metavar="[CONFIG]"),
                config_option(),
                json_option("print {valid, problems, agents} as JSON (exit 2 when not valid)"),
            ],
        )
    )


def run(args: Args) -> int:
    path = args.config_file or args.config
    found = problems(path, environment_for=None)
    if found:
        for line in found:
            print(f"agent-runtime: error: {line}", file=sys.stderr)
        print(f"agent-runtime: {path}: {len(found)} problem(s)", file=sys.stderr)
        if args.json:
            print(json.dumps({"config": str(path), "valid": False, "problems": found}))
        return EXIT_USAGE
    pipeline = Pipeline.load(path)
    if args.json:
        print(json.dumps(described(pipeline, str(path))))
        return 0
    print(summary(pipeline, str(path)))
    print("OK")
    return 0


def described(pipeline: Pipeline, path: str) -> dict[str, Any]:
    """What ``validate --json`` prints for a valid pipeline."""
    config = pipeline.config
    agents = []
    for name, agent in pipeline.agents.items():
        spec = config.agents[name]
        agents.append(
            {
                "name": name,
                "class": spec.class_path,
                "consumes": list(agent.consumes),
                "produces": [m.message_type for m in agent.cls.produces],
                "replicas": spec.replicas,
                "shards": spec.shards,
            }
        )
    return {
        "config": path,
        "valid": True,
        "problems": [],
        "key_prefix": config.key_prefix,
        "allowed_modules": list(config.allowed_modules),
        "agents": agents,
    }


def summary(pipeline: Pipeline, path: str) -> str:
    config = pipeline.config
    rows: list[tuple[object, ...]] = []
    for name, agent in pipeline.agents.items():
        spec = config.agents[name]
        produces = [m.message_type for m in agent.cls.produces] or "-"
        replicas = f"{spec.replicas}" + (f" ({spec.shards} shards)" if spec.shards > 1 else "")
        rows.append((name, spec.class_path, list(agent.consumes), produces, replicas))
    head = (
        f"pipeline {path}: {len(rows)} agent type(s), key prefix {config.key_prefix!r}, "
        f"allowed modules: {', '.join(config.allowed_modules) or '(built-ins only)'}"
    )
    if width() < UNLIMITED:
        head = textwrap.fill(head, width(), subsequent_indent="  ")
    table = format_table(("AGENT", "CLASS", "CONSUMES", "PRODUCES", "REPLICAS"), rows)
    return f"{head}\n{table}"
