"""``agent-runtime send TEXT``: publish a request; with ``--wait``, print its reply."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from agent_runtime.cli.common import add_config, add_redis, load_pipeline, redis_url
from agent_runtime.client import REPLY_GRACE, Client
from agent_runtime.codec import Decoded
from agent_runtime.errors import RequestTimeout
from protocols.core import RequestFailed

DEFAULT_WAIT = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "send",
        help="publish a request (optionally wait for its reply)",
        description="Publish TEXT as a user.request to the pipeline's entry agent and print its "
        "correlation id. With --wait, block until the first reply arrives on the "
        "request's own reply stream and print it (exit 0; exit 1 when the reply is the "
        "runtime's request.failed, e.g. the deadline passed), or exit 1 on timeout.",
    )
    parser.add_argument("text", metavar="TEXT", help="the request")
    parser.add_argument("--wait", "-w", action="store_true", help="wait for the reply")
    parser.add_argument(
        "--timeout",
        "-t",
        type=float,
        default=None,
        help=f"the request's deadline, after which agents drop it and reply request.failed "
        f"(default with --wait: {DEFAULT_WAIT:g}); --wait waits up to 2.5 s longer for that reply",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_config(parser)
    add_redis(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    client = Client.connect(url, pipeline)
    result: int = anyio.run(_send, client, args)
    return result


async def _send(client: Client, args: argparse.Namespace) -> int:
    timeout = args.timeout if args.timeout is not None else DEFAULT_WAIT
    deadline = timeout if (args.wait or args.timeout is not None) else None
    async with client:
        message = await client.publish(args.text, timeout=deadline)
        cid = str(message.correlation_id)
        if not args.wait:
            print(json.dumps({"correlation_id": cid}) if args.json else cid)
            return 0
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
            return 1
    print(json.dumps(reply_json(reply), indent=2) if args.json else reply_text(reply))
    if isinstance(reply.payload, RequestFailed):
        print(f"agent-runtime send: request {cid} {reply.payload.status}", file=sys.stderr)
        return 1
    return 0


def reply_json(reply: Decoded) -> dict[str, Any]:
    message = reply.message
    return {
        "correlation_id": str(message.correlation_id),
        "message_type": message.message_type,
        "schema_version": message.schema_version,
        "from_agent": message.from_agent,
        "payload": reply.payload.model_dump(mode="json"),
    }


def reply_text(reply: Decoded) -> str:
    lines = [f"reply: {reply.message.message_type} from {reply.message.from_agent}"]
    for key, value in reply.payload.model_dump(mode="json").items():
        shown = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
