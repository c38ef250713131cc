"""``agent-runtime`` command line (click). Thin: each command module adds its command to the
group with ``register(group)`` and calls the library; options shared by several commands
(--config, --redis-url, --json, --timeout) are defined once in cli/common.py, so help, usage
errors and shell completion (``completion bash|zsh|fish``) all come from one definition.
Command modules are listed explicitly in COMMAND_MODULES (order = order in --help); a command's
module is imported only when that command runs (or --help/completion lists them all), so
``agent-runtime worker`` does not import what ``run``, ``serve`` or ``approve`` need (with
structlog imported without rich: -9.0 % of a worker's start-up instructions, docs/benchmarks.md
"Issue 17: start time")."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

import click

from agent_runtime import __version__
from agent_runtime.cli.common import PARSE_ONLY, Args
from agent_runtime.cli.failures import EXIT_INTERNAL, describe

#: command name -> the module whose ``register`` adds it (order = order in --help)
COMMAND_MODULES = {
    "worker": "agent_runtime.cli.worker",
    "up": "agent_runtime.cli.up",
    "send": "agent_runtime.cli.send",
    "run": "agent_runtime.cli.run",
    "approve": "agent_runtime.cli.approve",
    "reject": "agent_runtime.cli.approve",
    "approvals": "agent_runtime.cli.approvals",
    "cancel": "agent_runtime.cli.cancel",
    "validate": "agent_runtime.cli.validate",
    "acl": "agent_runtime.cli.acl",
    "redis": "agent_runtime.cli.redis",
    "status": "agent_runtime.cli.status",
    "trace": "agent_runtime.cli.trace",
    "dlq": "agent_runtime.cli.dlq",
    "health": "agent_runtime.cli.health",
    "serve": "agent_runtime.cli.serve",
    "keys": "agent_runtime.cli.keys",
    "completion": "agent_runtime.cli.completion",
}
COMMANDS = list(dict.fromkeys(COMMAND_MODULES.values()))


PROG = "agent-runtime"


def build_cli() -> click.Group:
    """The command group: every module of COMMANDS adds its command(s) with ``register``,
    when one of them is first looked up. Help, usage errors (exit 2) and shell completion all
    come from this one definition."""
    return _LazyGroup(
        PROG,
        help="Run multi-agent pipelines over Redis Streams: typed messages, no lost work.",
        epilog="Without a Redis URL (--redis-url, AGENT_RUNTIME_REDIS_URL or redis_url in the "
        "config) commands use the embedded server that 'agent-runtime up' started.",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        params=[
            click.Option(
                ["--version"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_print_version,
                help="print the version and exit",
            )
        ],
    )


class _LazyGroup(click.Group):
    """Commands listed in COMMAND_MODULES order (related commands together), not
    alphabetically; a command's module is imported when the command is first looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            importlib.import_module(module).register(self)
        return self.commands.get(cmd_name)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"{PROG} {__version__}")
        ctx.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (README.md, "Exit status"). An expected failure is
    one line per problem on stderr, never a traceback (unless AGENT_RUNTIME_DEBUG=1). A usage
    error prints the usage and raises SystemExit(2); --help and --version exit 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = build_cli().main(args=args, prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def parse_args(argv: Sequence[str]) -> Args:
    """``argv`` (after ``agent-runtime``) parsed exactly as :func:`main` parses it, without
    running anything: the command's parameters as attributes, and ``command`` (its name, e.g.
    ``"serve"`` or ``"dlq list"``). A usage error raises click's UsageError."""
    token = PARSE_ONLY.set(True)
    try:
        result = build_cli().main(args=list(argv), prog_name=PROG, standalone_mode=False)
    finally:
        PARSE_ONLY.reset(token)
    if not isinstance(result, Args):
        raise click.UsageError(f"no command in {list(argv)!r}")
    return result


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
