"""``agent-runtime worker NAME``: run one agent type in this process until SIGTERM/SIGINT."""

from __future__ import annotations

import gc
import os
import signal

import anyio
import click

from agent_runtime.cli.common import (
    Args,
    answers,
    chosen_url,
    config_and_redis,
    load_pipeline,
    runs,
)
from agent_runtime.config.acl import worker_url
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.observability.logging import configure_logging
from agent_runtime.observability.process import metrics_port_from_env
from agent_runtime.observability.redaction import env_redactor
from agent_runtime.transport.connect import connect
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.worker.build import build_worker
from agent_runtime.worker.loop import default_consumer_name
from agent_runtime.worker.supervisor import die_with_supervisor

CONSUMER_NAME_ENV = "AGENT_RUNTIME_CONSUMER_NAME"


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "worker",
            callback=runs(run),
            short_help="run one agent type (one consumer) in this process",
            help="Consume the inbox of agent type NAME until SIGTERM/SIGINT, then drain: "
            "stop reading, let in-flight handlers finish (drain_timeout), hand the "
            "rest back to the group.",
            params=[
                click.Argument(["name"], metavar="NAME"),
                click.Option(
                    ["--slot"],
                    default="0",
                    help="replica slot; part of the stable consumer name (default 0)",
                ),
                click.Option(
                    ["--consumer"],
                    default=None,
                    help="consumer name (default: $AGENT_RUNTIME_CONSUMER_NAME, else "
                    "NAME-HOSTNAME-SLOT)",
                ),
                click.Option(
                    ["--metrics-port"],
                    type=int,
                    default=None,
                    help="serve Prometheus metrics on this port (default: "
                    "$AGENT_RUNTIME_METRICS_PORT; off when unset)",
                ),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    die_with_supervisor()  # first: a supervised worker gets SIGTERM when `up` dies
    # every problem of the config, and this agent type's API key, before anything starts
    pipeline = load_pipeline(args, environment_for=[args.name])
    if args.name not in pipeline.agents:
        known = ", ".join(sorted(pipeline.agents))
        raise SystemExit(
            f"agent-runtime worker: unknown agent type {args.name!r} (this config has: {known})"
        )
    configure_logging(redactor=env_redactor().with_config(pipeline.config))
    # on the server 'up' locked down, its own agent type's user, not the admin it finds
    url = worker_url(chosen_url(args, pipeline), pipeline, args.name)
    consumer = args.consumer or consumer_from_env() or default_consumer_name(args.name, args.slot)
    port = args.metrics_port if args.metrics_port is not None else metrics_port_from_env()
    anyio.run(serve, pipeline, args.name, url, consumer, port, backend_options=loop_options())
    return 0


def consumer_from_env() -> str | None:
    """``AGENT_RUNTIME_CONSUMER_NAME``: a stable consumer name for a worker whose host name
    changes when it is replaced (a recreated container), so the new process re-reads what the
    old one left pending at once instead of after ``reclaim_idle``. One process per name."""
    value = os.environ.get(CONSUMER_NAME_ENV, "").strip()
    if not value:
        return None
    if len(value) > 200 or not value.isprintable() or any(c.isspace() for c in value):
        raise SystemExit(
            f"agent-runtime worker: {CONSUMER_NAME_ENV} must be 1-200 printable characters "
            "without spaces"
        )
    return value


async def serve(
    pipeline: Pipeline, name: str, url: str, consumer: str, metrics_port: int | None = None
) -> None:
    connection = connect(url)
    # one line (exit 4) now if the server cannot be reached or refuses us, rather than a hang
    # or a failure midway; over the worker's own connection, in its own event loop (a PING
    # of its own before anyio.run cost a second loop and connection per worker start)
    await answers(RuntimeReader.of(connection))
    built = build_worker(
        pipeline,
        name,
        connection.redis,
        consumer=consumer,
        cluster=connection.cluster,
        metrics_port=metrics_port,
    )
    worker = built.worker
    tune_gc()
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    built.observability.draining()  # /readyz: 503 while it drains
                    worker.stop()
                    return

        tg.start_soon(stop_on_signal)
        tg.start_soon(built.observability.run_collector, connection.redis)
        await worker.run()
        tg.cancel_scope.cancel()
    await connection.redis.aclose()


def loop_options() -> dict[str, bool]:
    """uvloop when it is installed (a dependency on Linux and macOS): the worker's per-message
    task scheduling and socket I/O run in C. AGENT_RUNTIME_UVLOOP=0 turns it off."""
    if os.environ.get("AGENT_RUNTIME_UVLOOP", "1") == "0":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def tune_gc() -> None:
    """Garbage collection tuned for a long-running consume loop: what start-up built (modules,
    config, models) is moved out of the collector's view, and the young generation is
    collected every 10,000 net allocations instead of 700. Messages are freed by reference
    counting. Measured gain: 5,286 instructions per message, 3.0 % / 3.4 % of the runtime's
    (traces on / off, idle machine; docs/benchmarks.md "Speed tricks"). AGENT_RUNTIME_GC_TUNE=0
    keeps Python's defaults."""
    if os.environ.get("AGENT_RUNTIME_GC_TUNE", "1") == "0":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
