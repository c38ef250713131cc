"""``agent-runtime cancel CORRELATION_ID [--reason TEXT] [--by NAME]``: end a request now.

The requester gets the terminal reply ``request.failed`` with status ``cancelled`` (who and
why), no further step of it is dispatched, no tool of it starts any more, running tool calls
are cancelled where the tool allows it, and its trace shows who cancelled
(agent_runtime/cancel.py). A finished or unknown request is refused with one line (exit 1).
"""

from __future__ import annotations

import getpass
import json
import sys

import anyio
import click

from agent_runtime.cancel import CancelRefused, CancelResult, cancel_request
from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    open_connection,
    redis_url,
    runs,
)
from agent_runtime.cli.failures import EXIT_NOT_OK
from agent_runtime.client import Client


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "cancel",
            callback=runs(run),
            short_help="cancel a request: it ends 'cancelled', nothing more of it runs",
            help="Cancel request CORRELATION_ID: its requester gets a 'cancelled' reply at "
            "once, no further step is dispatched or started, running tool calls are cancelled "
            "where the tool allows it, and the trace records who cancelled and why. Exits 1 "
            "when the request is unknown or has already finished.",
            params=[
                click.Argument(["correlation_id"], metavar="CORRELATION_ID"),
                click.Option(
                    ["--reason"], default="", help="why (shown to the requester and in the trace)"
                ),
                click.Option(
                    ["--by"],
                    default=None,
                    help="who cancels (default: the login name); recorded in the trace",
                ),
                json_option(
                    "print the result as JSON (correlation_id, by, reason, at, tools_started)"
                ),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    pipeline = load_pipeline(args)
    client = Client(open_connection(redis_url(args, pipeline)).redis, pipeline)
    by = args.by or _login()
    try:
        result: CancelResult = anyio.run(_cancel, client, args.correlation_id, by, args.reason)
    except CancelRefused as exc:
        print(f"agent-runtime cancel: {exc}", file=sys.stderr)
        return EXIT_NOT_OK
    if args.json:
        cancellation = result.cancellation
        print(
            json.dumps(
                {
                    "correlation_id": result.correlation_id,
                    "by": cancellation.by,
                    "reason": cancellation.reason,
                    "at": cancellation.at,
                    "tools_started": result.tools_started,
                }
            )
        )
        return 0
    running = "; tool calls in flight are being cancelled" if result.tools_started else ""
    print(f"request {result.correlation_id} {result.cancellation.text()}{running}")
    return 0


async def _cancel(client: Client, cid: str, by: str, reason: str) -> CancelResult:
    async with client:
        return await cancel_request(client, cid, by=by, reason=reason)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "human"
