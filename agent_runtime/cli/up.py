"""``agent-runtime up``: run every agent type's replicas as supervised worker processes.

Without a Redis URL it starts the embedded server (persistent, AOF) in the runtime directory
and records it, so ``send``/``status`` in another terminal find it. SIGINT/SIGTERM stop the
workers (drain), then the server.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import anyio

from agent_runtime.approval import child_env
from agent_runtime.cli._table import format_table
from agent_runtime.cli.common import add_config, add_redis, configured_url, load_pipeline, ping
from agent_runtime.cli.failures import mask_url
from agent_runtime.config.pipeline import Pipeline, signing_env
from agent_runtime.errors import AgentRuntimeError, ConfigError
from agent_runtime.transport.embedded import EmbeddedServer, clear_state, find_running, runtime_dir
from agent_runtime.worker.supervisor import Supervisor, WorkersNotReady


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "up",
        help="run all agent types as supervised worker processes",
        description="Start the configured replicas of every agent type as separate worker "
        "processes, restart crashed ones with backoff, stop them gracefully on "
        "Ctrl-C/SIGTERM. Without a Redis URL an embedded server is started (data "
        "kept in the runtime directory, AOF persistence).",
    )
    add_config(parser)
    add_redis(parser)
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override an agent type's replica count (repeatable)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="write each worker's output to DIR/AGENT-SLOT.log (default: this terminal)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for every worker's first heartbeat (default 60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every problem of the config (and the API keys of every agent type) before any process
    pipeline = load_pipeline(args, environment_for=None)
    replicas = parse_replicas(args.replicas)
    url = configured_url(args, pipeline)
    if url:
        anyio.run(ping, url)  # an unreachable server: one line, exit 4, no worker started
        _say(f"redis: {mask_url(url)}")
        code: int = anyio.run(supervise, args, pipeline, url, replicas)
        return code
    server = _start_embedded()
    args.target_url = server.url
    try:
        _say(
            f"redis: {server.url}  (embedded server, pid {_pid(server)}, data in {server.data_dir})"
        )
        code = anyio.run(supervise, args, pipeline, server.url, replicas)
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
    server = EmbeddedServer(runtime_dir() / "data", persistent=True).start()
    server.publish_state()
    return server


async def supervise(
    args: argparse.Namespace, pipeline: Pipeline, url: str, replicas: dict[str, int]
) -> int:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sup = Supervisor(
            pipeline.source or args.config,
            url,
            replicas=replicas,
            log_dir=args.log_dir,
            # approval signing key: AGENT_RUNTIME_APPROVAL_KEY or a random one; envelope keys
            env={**child_env(), **signing_env(pipeline)},
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


async def _announce(sup: Supervisor, args: argparse.Namespace) -> None:
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
