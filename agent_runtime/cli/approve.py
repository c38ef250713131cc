"""``agent-runtime approve CID [--step ID]`` and ``agent-runtime reject CID [--step ID]``:
answer a request's steps that wait for human approval. The decision goes to the safety
checker, which signs approved steps; the router then resumes the plan (finished steps are
never run again). Without ``--step`` the decision covers every waiting step."""

from __future__ import annotations

import getpass
import json
import sys

import anyio
import click

from agent_runtime.approval import submit_decision
from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    open_connection,
    redis_url,
    runs,
)
from agent_runtime.client import Client
from agent_runtime.errors import RequestError


def register(group: click.Group) -> None:
    for name, approved in (("approve", True), ("reject", False)):
        verb = "approve" if approved else "reject"
        group.add_command(
            click.Command(
                name,
                callback=runs(run, approved=approved),
                short_help=f"{verb} a request's steps that wait for human approval",
                help=f"{verb.capitalize()} the steps of request CORRELATION_ID that the "
                "safety policy holds for a human (all of them unless --step is given). "
                "Exits 1 when nothing of that request is waiting.",
                params=[
                    click.Argument(["correlation_id"], metavar="CORRELATION_ID"),
                    click.Option(
                        ["--step"],
                        multiple=True,
                        metavar="ID",
                        help="a step id (repeatable; default: every waiting step)",
                    ),
                    click.Option(
                        ["--by"],
                        default=None,
                        help="who decides (default: the login name); recorded in the signed "
                        "approval",
                    ),
                    click.Option(["--comment"], default="", help="shown in the report"),
                    json_option("print the decision as JSON (request, decision, steps, by)"),
                    *config_and_redis(),
                ],
            )
        )


def run(args: Args) -> int:
    pipeline = load_pipeline(args)
    client = Client(open_connection(redis_url(args, pipeline)).redis, pipeline)
    approver = args.by or _login()
    try:
        steps: list[str] = anyio.run(_decide, client, args, approver)
    except RequestError as exc:
        print(f"agent-runtime {'approve' if args.approved else 'reject'}: {exc}", file=sys.stderr)
        return 1
    verb = "approved" if args.approved else "rejected"
    if args.json:
        decision = {
            "correlation_id": args.correlation_id,
            "decision": verb,
            "steps": steps,
            "by": approver,
            "comment": args.comment,
        }
        print(json.dumps(decision))
        return 0
    print(f"{verb} step(s) {', '.join(steps)} of request {args.correlation_id} (by {approver})")
    return 0


async def _decide(client: Client, args: Args, approver: str) -> list[str]:
    async with client:
        return await submit_decision(
            client,
            args.correlation_id,
            approved=args.approved,
            steps=args.step,
            approver=approver,
            comment=args.comment,
        )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "human"
