"""Options and helpers shared by the commands."""

from __future__ import annotations

import argparse
import os

from agent_runtime.embedded import find_running
from agent_runtime.errors import AgentRuntimeError
from agent_runtime.pipeline import Pipeline

DEFAULT_CONFIG = "configs/default.yaml"


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("AGENT_RUNTIME_CONFIG", DEFAULT_CONFIG),
        help="pipeline YAML (default: $AGENT_RUNTIME_CONFIG or %(default)s)",
    )


def add_redis(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=None,
        help="redis://, rediss://, unix:// or redis+cluster:// URL (default: "
        "$AGENT_RUNTIME_REDIS_URL, the config's redis_url, or the embedded "
        "server started by 'agent-runtime up')",
    )


def load_pipeline(args: argparse.Namespace) -> Pipeline:
    return Pipeline.load(args.config)


def redis_url(args: argparse.Namespace, pipeline: Pipeline | None) -> str:
    """The URL to use, or a clear error when there is none and no embedded server runs."""
    url = getattr(args, "redis_url", None) or os.environ.get("AGENT_RUNTIME_REDIS_URL")
    if not url and pipeline is not None:
        url = pipeline.config.redis_url
    if not url:
        url = find_running()
    if not url:
        raise AgentRuntimeError(
            "no Redis server to talk to: no --redis-url, AGENT_RUNTIME_REDIS_URL or redis_url "
            "in the config, and no embedded server is running (start one with "
            "'agent-runtime up' in another terminal)"
        )
    return url
