"""``agent-runtime`` command line. Thin: each command module parses its arguments and calls the
library. Command modules are listed explicitly in COMMANDS (order = order in --help)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from agent_runtime import __version__
from agent_runtime.cli.failures import EXIT_INTERNAL, describe
from agent_runtime.observability.logging import configure_logging

COMMANDS = [
    "agent_runtime.cli.worker",
    "agent_runtime.cli.up",
    "agent_runtime.cli.send",
    "agent_runtime.cli.run",
    "agent_runtime.cli.approve",
    "agent_runtime.cli.approvals",
    "agent_runtime.cli.cancel",
    "agent_runtime.cli.validate",
    "agent_runtime.cli.acl",
    "agent_runtime.cli.redis",
    "agent_runtime.cli.status",
    "agent_runtime.cli.trace",
    "agent_runtime.cli.dlq",
    "agent_runtime.cli.health",
    "agent_runtime.cli.serve",
    "agent_runtime.cli.keys",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-runtime",
        description="Run multi-agent pipelines over Redis Streams: typed messages, no lost work.",
        epilog="Without a Redis URL (--redis-url, AGENT_RUNTIME_REDIS_URL or redis_url in the "
        "config) commands use the embedded server that 'agent-runtime up' started.",
    )
    parser.add_argument("--version", action="version", version=f"agent-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (README.md, "Exit status"). An expected failure is
    one line per problem on stderr, never a traceback (unless AGENT_RUNTIME_DEBUG=1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging()  # once per process: JSON unless stderr is a terminal, redacted
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BaseException as exc:
        return report_failure(exc, getattr(args, "target_url", None))


def report_failure(exc: BaseException, url: str | None) -> int:
    """Print ``exc`` as the user should see it and return the exit status."""
    failure = describe(exc, url)
    if failure is None or os.environ.get("AGENT_RUNTIME_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc)
    if failure is None:
        print("agent-runtime: internal error (a bug: the traceback is above)", file=sys.stderr)
        return EXIT_INTERNAL
    for line in failure.lines:
        print(f"agent-runtime: error: {line}", file=sys.stderr)
    return failure.code
