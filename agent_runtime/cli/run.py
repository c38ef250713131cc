"""``agent-runtime run "TEXT"``: the whole pipeline for one request, then exit.

Starts the embedded server (unless a Redis URL is configured), every agent type's replicas as
separate worker processes (Supervisor), publishes the request, prints one progress line per
hop from the request's trace, prints the report, stops everything.

Any terminal reply ends it: the default pipeline's Report, the runtime's ``request.failed``, or
a custom pipeline's own reply type (cli/outcome.py prints each). Exit status (the table in
README.md): 0 the request succeeded; 1 it did not (rejected, failed, budget exceeded, invalid,
or the runtime gave up on it); 2 usage or configuration error (nothing was started); 3 its
deadline (--timeout) passed (the runtime's timeout reply, or no reply at all); 4 the Redis
server cannot be reached (nothing was started). ``--json`` prints only the reply's payload
(with its ``message_type``) as JSON on stdout (progress goes to stderr either way).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import click

from agent_runtime.approval import child_env, pending_approvals
from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    configured_url,
    json_option,
    load_pipeline,
    open_connection,
    ping,
    runs,
    timeout_option,
)
from agent_runtime.cli.failures import EXIT_OK, EXIT_TIMEOUT
from agent_runtime.cli.outcome import print_reply
from agent_runtime.cli.progress import hop_line
from agent_runtime.client import REPLY_GRACE, Client, user_request
from agent_runtime.codec import Decoded
from agent_runtime.config.pipeline import Pipeline, signing_env
from agent_runtime.errors import RequestTimeout
from agent_runtime.observability.logging import configure_logging
from agent_runtime.transport.embedded import EmbeddedServer, clear_state, find_running
from agent_runtime.transport.traces import TraceLog
from agent_runtime.worker.supervisor import Supervisor
from protocols.core import MAX_REQUEST_TEXT, UserRequest
from protocols.envelope import AgentMessage


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "run",
            callback=runs(run),
            short_help="run one request through the whole pipeline and print its report",
            help="Start Redis (embedded unless a URL is configured) and every agent as its "
            "own process, publish TEXT, show each hop live, print the reply (the "
            "report), shut down. TEXT: the request, 1 to "
            f"{MAX_REQUEST_TEXT:,} characters (see docs/rules-grammar.md). Exit 0 on "
            "success, 1 if the request was rejected or failed, 2 on a usage or config error, "
            "3 on timeout, 4 if the Redis server cannot be reached (see the README's exit "
            "status table).",
            params=[
                click.Argument(["text"], metavar="TEXT"),
                json_option("print only the reply's payload (e.g. the Report) as JSON on stdout"),
                timeout_option(
                    120.0,
                    "the request's deadline in seconds; the report, or the runtime's timeout "
                    "reply, is awaited up to 2.5 s longer",
                ),
                click.Option(
                    ["--budget"],
                    type=float,
                    default=None,
                    metavar="USD",
                    help="the request's budget in USD, checked at every hop",
                ),
                click.Option(
                    ["--ready-timeout"],
                    type=float,
                    default=60.0,
                    show_default=True,
                    metavar="SECONDS",
                    help="seconds to wait for every worker to start",
                ),
                click.Option(
                    ["--log-dir"],
                    type=click.Path(path_type=Path),
                    default=None,
                    metavar="DIR",
                    help="keep each worker's log in DIR/AGENT-SLOT.log (default: a "
                    "temporary directory, removed on exit)",
                ),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    # progress lines are the output; the supervisor's own log only when asked for
    configure_logging(level=os.environ.get("AGENT_RUNTIME_LOG_LEVEL") or "warning")
    payload = user_request(args.text)  # refused before anything starts (exit 2)
    pipeline = load_pipeline(args, environment_for=None)  # every problem, nothing started
    url = configured_url(args, pipeline)
    with tempfile.TemporaryDirectory(prefix="agent-runtime-run-") as tmp:
        log_dir = args.log_dir or Path(tmp, "logs")
        log_dir.mkdir(parents=True, exist_ok=True)
        if url:
            anyio.run(ping, url)  # an unreachable server: one line, exit 4, no worker started
            code: int = anyio.run(execute, args, pipeline, payload, url, log_dir)
            return code
        server = EmbeddedServer(Path(tmp, "redis"), persistent=False).start()
        announced = find_running() is None  # lets 'approve' in another terminal find it
        if announced:
            server.publish_state()
        try:
            _say(f"embedded redis: {server.url}")
            args.target_url = server.url
            code = anyio.run(execute, args, pipeline, payload, server.url, log_dir)
        finally:
            if announced:
                clear_state()
            server.stop()
        return code


async def execute(
    args: Args, pipeline: Pipeline, payload: UserRequest, url: str, log_dir: Path
) -> int:
    env = child_env()  # approval key pair (ours or the runtime home's), given per agent type
    env.update(signing_env(pipeline))  # envelope keys: the runtime directory's, kept
    started = time.monotonic()
    async with Supervisor(
        pipeline.source or args.config, url, env=env, log_dir=log_dir, pipeline=pipeline
    ) as sup:
        await sup.wait_ready(args.ready_timeout)
        _say(
            f"{len(sup.processes())} worker processes ready in "
            f"{time.monotonic() - started:.1f}s (logs: {log_dir})"
        )
        connection = open_connection(url)
        client = Client(connection.redis, pipeline)
        async with client:
            message = await client.publish(payload, timeout=args.timeout, budget_usd=args.budget)
            _say(f"request {message.correlation_id}: {args.text}")
            tail = TraceTail(TraceLog.of(connection, pipeline.config.keys), message)
            reply = await follow(client, tail, message, args.timeout + REPLY_GRACE)
        _say("stopping workers")
    if reply is None:
        _say(
            f"agent-runtime run: no reply to request {message.correlation_id} within "
            f"{args.timeout:g}s; worker logs are in {log_dir}"
        )
        return EXIT_TIMEOUT
    code = print_reply(reply, sys.stdout, as_json="payload" if args.json else None)
    if code != EXIT_OK:
        _say(f"agent-runtime run: the request did not succeed; worker logs are in {log_dir}")
    return code


async def follow(
    client: Client, tail: TraceTail, message: AgentMessage, wait: float
) -> Decoded | None:
    """Print progress until the request's reply (whatever its type: a Report, the runtime's
    ``request.failed``, a custom pipeline's own terminal reply) arrives; None when none
    arrived within ``wait`` seconds. The wait runs in the task group's host, and its timeout
    is caught there: a task group would wrap it in an exception group."""
    reply: Decoded | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(tail.follow)
        tg.start_soon(_hint_approvals, client, str(message.correlation_id))
        try:
            reply = await client.wait_reply(message, wait)
        except RequestTimeout:
            reply = None
        finally:
            tg.cancel_scope.cancel()
    await tail.poll(block=None)  # the hops committed together with the reply
    return reply


class TraceTail:
    """Prints a request's trace records as they are written: the trace is a list, read from
    the first index not printed yet every ``interval`` seconds."""

    def __init__(self, traces: TraceLog, message: AgentMessage, interval: float = 0.2) -> None:
        self.traces = traces
        self.correlation_id = str(message.correlation_id)
        self.published_ms = int(message.timestamp.timestamp() * 1000)
        self.interval = interval
        self.next = 0  # index of the first record not printed yet

    async def follow(self) -> None:
        while True:
            await self.poll(block=int(self.interval * 1000))

    async def poll(self, *, block: int | None) -> None:
        """Print the records written since the last poll; ``block`` ms: sleep that long
        first (a list cannot be waited on without taking its elements), None: read at once."""
        if block:
            await anyio.sleep(block / 1000)
        records = await self.traces.records(self.correlation_id, self.next)
        self.next += len(records)
        for record in records:
            line = hop_line(record, self.published_ms)
            if line:
                _say(line)


async def _hint_approvals(client: Client, cid: str) -> None:
    shown: set[str] = set()
    while True:
        now = await client.clock.now()  # expiry on the server's clock
        pending = await pending_approvals(client.state, client.keys, cid, now=now)
        for step_id, info in sorted(pending.items()):
            if step_id not in shown:
                shown.add(step_id)
                step = info.get("step", {})
                _say(
                    f"  step {step_id} ({step.get('tool')} {json.dumps(step.get('args'))}) waits "
                    f"for approval:\n      agent-runtime approve {cid} --step {step_id}\n"
                    f"      agent-runtime reject {cid} --step {step_id}"
                )
        await anyio.sleep(0.5)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
