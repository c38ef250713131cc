"""``agent-runtime up``: run every agent type's replicas as supervised worker processes.

Without a Redis URL it starts the embedded server (persistent, AOF) in the runtime directory
and records it, so ``send``/``status`` in another terminal find it. That server gets one ACL
user per agent type (agent_runtime/config/acl.py) and an admin user for the commands; its
default user is switched off, and each worker gets its own user's URL in its environment.
SIGINT/SIGTERM stop the workers (drain), then the server.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import click

from agent_runtime.approval import child_env
from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    configured_url,
    load_pipeline,
    ping,
    runs,
)
from agent_runtime.cli.failures import UsageError, mask_url
from agent_runtime.config.acl import ACL_DIR, Credentials, agent_urls, lock_down
from agent_runtime.config.pipeline import Pipeline, signing_env
from agent_runtime.errors import AgentRuntimeError, ConfigError
from agent_runtime.transport.embedded import (
    EmbeddedServer,
    clear_state,
    find_running,
    publish_state,
    runtime_dir,
)
from agent_runtime.worker.supervisor import Supervisor, WorkersNotReady


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "up",
            callback=runs(run),
            short_help="run all agent types as supervised worker processes",
            help="Start the configured replicas of every agent type as separate worker "
            "processes, restart crashed ones with backoff, stop them gracefully on "
            "Ctrl-C/SIGTERM. Without a Redis URL an embedded server is started (data "
            "kept in the runtime directory, AOF persistence).",
            params=[
                *config_and_redis(),
                click.Option(
                    ["--replicas"],
                    multiple=True,
                    metavar="NAME=N",
                    help="override an agent type's replica count (repeatable)",
                ),
                click.Option(
                    ["--log-dir"],
                    type=click.Path(path_type=Path),
                    default=None,
                    metavar="DIR",
                    help="write each worker's output to DIR/AGENT-SLOT.log (default: this "
                    "terminal)",
                ),
                click.Option(
                    ["--acl-secrets"],
                    type=click.Path(path_type=Path),
                    default=None,
                    metavar="DIR",
                    help="with --redis-url: run each agent type's workers as its own Redis "
                    "user, passwords from DIR (made by 'agent-runtime acl --secrets-dir DIR'; "
                    "docs/security.md)",
                ),
                click.Option(
                    ["--ready-timeout"],
                    type=float,
                    default=60.0,
                    show_default=True,
                    metavar="SECONDS",
                    help="seconds to wait for every worker's first heartbeat",
                ),
            ],
        )
    )


def run(args: Args) -> int:
    # every problem of the config (and the API keys of every agent type) before any process
    pipeline = load_pipeline(args, environment_for=None)
    replicas = parse_replicas(args.replicas)
    url = configured_url(args, pipeline)
    if url:
        anyio.run(ping, url)  # an unreachable server: one line, exit 4, no worker started
        _say(f"redis: {mask_url(url)}")
        users = agent_urls(pipeline, url, args.acl_secrets) if args.acl_secrets else None
        code: int = anyio.run(supervise, args, pipeline, url, replicas, users)
        return code
    if args.acl_secrets:
        raise UsageError("--acl-secrets needs --redis-url (the embedded server gets its own users)")
    server = _start_embedded()
    args.target_url = server.url
    try:
        credentials = _lock_down(server, pipeline)
        _say(
            f"redis: {server.url}  (embedded server, pid {_pid(server)}, data in {server.data_dir}"
            f"; one Redis user per agent type, passwords in {runtime_dir() / ACL_DIR})"
        )
        code = anyio.run(
            supervise, args, pipeline, credentials.admin_url, replicas, credentials.agent_urls
        )
    finally:
        server.stop()
        clear_state()
        _say("embedded server stopped")
    return code


def parse_replicas(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit():
            raise ConfigError(f"--replicas {item!r}: expected NAME=N with N >= 0")
        counts[name] = int(count)
    return counts


def _start_embedded() -> EmbeddedServer:
    running = find_running()
    if running:
        raise AgentRuntimeError(
            f"an embedded server started by another 'agent-runtime up' is running ({running}); "
            "stop that one first, or pass --redis-url to use a server of your own"
        )
    return EmbeddedServer(runtime_dir() / "data", persistent=True).start()


def _lock_down(server: EmbeddedServer, pipeline: Pipeline) -> Credentials:
    """One ACL user per agent type and an admin user on the embedded server, its default user
    switched off; the admin URL (with its password) is recorded, readable by this user only,
    for the other commands (send, status, trace, dlq, approve)."""
    credentials: Credentials = anyio.run(lock_down, pipeline, server.url, runtime_dir() / ACL_DIR)
    assert server.process is not None
    publish_state(credentials.admin_url, server.process.pid)
    return credentials


async def supervise(
    args: Args,
    pipeline: Pipeline,
    url: str,
    replicas: dict[str, int],
    agent_urls: dict[str, str] | None = None,
) -> int:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sup = Supervisor(
            pipeline.source or args.config,
            url,
            replicas=replicas,
            log_dir=args.log_dir,
            # the approval key pair (ours, else the runtime home's) and the envelope keys
            env={**child_env(), **signing_env(pipeline)},
            agent_urls=agent_urls,  # each agent type's own Redis user (embedded server)
            pipeline=pipeline,  # loaded and checked above: not read again
        )
        async with sup, anyio.create_task_group() as tg:
            tg.start_soon(_announce, sup, args)
            async for signum in signals:
                _say(
                    f"{signal.Signals(signum).name} received: stopping workers (they finish "
                    "in-flight messages first)"
                )
                break
            tg.cancel_scope.cancel()
    _say("workers stopped")
    return 0


async def _announce(sup: Supervisor, args: Args) -> None:
    # imported here: rich (the table) is not needed before the workers are spawned
    from agent_runtime.observability.tables import format_table

    try:
        await sup.wait_ready(args.ready_timeout)
        status = "workers ready"
    except WorkersNotReady as exc:
        status = f"warning: {exc} (still supervising; crashed workers are restarted)"
    rows = [
        (
            p.agent,
            p.slot,
            p.pid or "-",
            p.restarts,
            sup.metrics_port(p.agent, p.slot) or "-",
            sup.log_path(p.agent, p.slot) or "-",
        )
        for p in sup.processes()
    ]
    _say(format_table(("AGENT", "SLOT", "PID", "RESTARTS", "METRICS", "LOG"), rows))
    _say(status)
    _say(
        f"send a request from another terminal: agent-runtime send 'TEXT' --wait "
        f"--config {args.config}    (Ctrl-C here stops everything)"
    )


def _pid(server: EmbeddedServer) -> int | str:
    return server.process.pid if server.process is not None else "?"


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
