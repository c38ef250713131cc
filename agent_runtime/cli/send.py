"""``agent-runtime send TEXT``: publish a request; with ``--wait``, print its reply."""

from __future__ import annotations

import json
import sys

import anyio
import click

from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    open_connection,
    redis_url,
    runs,
    timeout_option,
)
from agent_runtime.cli.failures import EXIT_OK, EXIT_TIMEOUT
from agent_runtime.cli.outcome import print_reply
from agent_runtime.client import REPLY_GRACE, Client, user_request
from agent_runtime.errors import RequestTimeout
from protocols.core import MAX_REQUEST_TEXT, UserRequest

DEFAULT_WAIT = 60.0


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "send",
            callback=runs(run),
            short_help="publish a request (optionally wait for its reply)",
            help="Publish TEXT as a user.request to the pipeline's entry agent and print its "
            "correlation id. With --wait, block until the first reply arrives on the "
            "request's own reply stream and print it as 'run' does: exit 0 when the request "
            "succeeded, 1 when it did not (a report that is not a success, the runtime's "
            "request.failed), 3 when its deadline passed (no reply in time, or a timeout "
            f"reply). TEXT: 1 to {MAX_REQUEST_TEXT:,} characters. Exit codes: see the README.",
            params=[
                click.Argument(["text"], metavar="TEXT"),
                click.Option(["--wait", "-w"], is_flag=True, help="wait for the reply"),
                timeout_option(
                    None,
                    "the request's deadline, after which agents drop it and reply "
                    f"request.failed (default with --wait: {DEFAULT_WAIT:g}); --wait waits up "
                    "to 2.5 s longer for that reply",
                ),
                json_option(),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    payload = user_request(args.text)  # refused before anything is published (exit 2)
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    client = Client(open_connection(url).redis, pipeline)
    result: int = anyio.run(_send, client, args, payload)
    return result


async def _send(client: Client, args: Args, payload: UserRequest) -> int:
    timeout = args.timeout if args.timeout is not None else DEFAULT_WAIT
    deadline = timeout if (args.wait or args.timeout is not None) else None
    async with client:
        message = await client.publish(payload, timeout=deadline)
        cid = str(message.correlation_id)
        if not args.wait:
            print(json.dumps({"correlation_id": cid}) if args.json else cid)
            return EXIT_OK
        if not args.json:
            print(f"correlation id: {cid}", flush=True)
        try:
            reply = await client.wait_reply(message, timeout + REPLY_GRACE)
        except RequestTimeout:
            print(
                f"agent-runtime send: no reply to request {cid} within {timeout:g}s (are "
                "workers running for this config? see 'agent-runtime status' and "
                f"'agent-runtime trace {cid}')",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
    code = print_reply(reply, sys.stdout, as_json="envelope" if args.json else None)
    if code != EXIT_OK:
        print(f"agent-runtime send: request {cid} did not succeed", file=sys.stderr)
    return code
