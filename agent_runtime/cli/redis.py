"""``agent-runtime redis [--cluster N] [--replicas R]``: run a local server or a local Redis
Cluster from the embedded binary in the foreground, print its URL, stop on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import click

from agent_runtime.cli.common import (
    Args,
    runs,
)
from agent_runtime.transport.cluster import LocalCluster
from agent_runtime.transport.embedded import (
    EmbeddedServer,
    clear_state,
    find_running,
    publish_state,
)


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "redis",
            callback=runs(run),
            short_help="run a local Redis server or Redis Cluster (embedded binary)",
            help="Start the embedded server binary in the foreground and print the URL to "
            "give workers (--redis-url or AGENT_RUNTIME_REDIS_URL). With --cluster N: "
            "N masters on loopback TCP ports (<= 55535), joined into one cluster. "
            "Stops on SIGTERM/SIGINT; the servers die with this process.",
            params=[
                click.Option(
                    ["--cluster"],
                    type=int,
                    default=0,
                    metavar="N",
                    help="number of cluster masters (0 = a single server; 3 is the smallest "
                    "real cluster)",
                ),
                click.Option(
                    ["--replicas"],
                    type=int,
                    default=0,
                    metavar="R",
                    help="replicas per master (cluster only)",
                ),
                click.Option(
                    ["--dir"],
                    default=None,
                    metavar="DIR",
                    help="data directory (default: a new temporary directory)",
                ),
                click.Option(
                    ["--persistent"],
                    is_flag=True,
                    help="AOF persistence (appendfsync everysec) in --dir",
                ),
            ],
        )
    )


def run(args: Args) -> int:
    if args.cluster < 0 or args.replicas < 0 or (args.replicas and not args.cluster):
        raise SystemExit(
            "agent-runtime redis: --cluster N >= 1 and --replicas R >= 0 (replicas need --cluster)"
        )
    data_dir = Path(args.dir or tempfile.mkdtemp(prefix="agent-runtime-redis-"))
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    if args.cluster:
        cluster = LocalCluster(
            data_dir, masters=args.cluster, replicas=args.replicas, persistent=args.persistent
        ).start()
        pid = cluster.nodes[0].process.pid if cluster.nodes[0].process else 0
        return _serve(cluster.url, pid, stopped, cluster.stop)
    server = EmbeddedServer(data_dir, persistent=args.persistent).start()
    pid = server.process.pid if server.process else 0
    return _serve(server.url, pid, stopped, server.stop)


def _serve(url: str, pid: int, stopped: threading.Event, stop: Callable[[], None]) -> int:
    """Print the URL, record it for other commands if none is recorded, wait for a signal."""
    published = find_running() is None
    if published:
        publish_state(url, pid)
    print(url, flush=True)
    print(f"export AGENT_RUNTIME_REDIS_URL={url}", file=sys.stderr, flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        if published:
            clear_state()
        stop()
    return 0
