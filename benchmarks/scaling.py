"""Horizontal scaling of an I/O-bound agent: 1 vs N worker processes of one agent type.

Each message costs a simulated 100 ms async call (benchmarks/scaling_agents.py). Workers run
with ``concurrency 1`` (one in-flight handler per process) so the gain comes from processes
alone; the real default (concurrency 512) would hide it inside one process. Throughput is
messages / (time from the first XADD until every entry is acknowledged).

    .venv/bin/python benchmarks/scaling.py [--workers 1 4] [--seconds 6] [--cluster]

``--cluster`` runs the same on a local 3-master Redis Cluster with the inbox sharded in 4.
``--checkout NAME=PATH`` (repeatable) also runs every worker count with the workers of another
checkout of the project (they import that checkout's code), interleaved in each of ``--rounds``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.cluster import LocalCluster  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from protocols.core import UserRequest  # noqa: E402

AGENT = "slow"


def write_config(tmp: Path, prefix: str, args: argparse.Namespace) -> Path:
    worker = {
        "concurrency": args.concurrency,
        "batch_size": args.concurrency,
        "block_ms": 100,
        "heartbeat_interval": 0.5,
        "trace": False,
    }
    config = {
        "key_prefix": prefix,
        "allowed_modules": ["benchmarks"],
        "worker": worker,
        "agents": {
            AGENT: {
                "class": "benchmarks.scaling_agents:SlowCall",
                "shards": args.shards,
                "config": {"call_seconds": args.call_ms / 1000},
            }
        },
    }
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_workers(
    n: int, config: Path, url: str, checkout: Path = ROOT
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "AGENT_RUNTIME_LOG_LEVEL": "warning"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_runtime",
                "worker",
                AGENT,
                "--slot",
                str(slot),
                "--config",
                str(config),
                "--redis-url",
                url,
            ],
            env=env,
            cwd=checkout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for slot in range(n)
    ]


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def consumed(r: Any, streams: list[str], n: int) -> bool:
    read = pending = 0
    for stream in streams:
        for group in r.xinfo_groups(stream):
            read += int(group.get("entries-read") or 0)
            pending += int(group["pending"])
    return read >= n and pending == 0


def produce(url: str, pipeline: Pipeline, n: int) -> None:
    import anyio

    async def send_all() -> None:
        from agent_runtime.transport import connect

        redis_client = connect(url).redis
        client = Client(redis_client, pipeline)
        for i in range(n):
            await client.send(client.new_message(UserRequest(text=f"call {i}")))
        await redis_client.aclose()

    anyio.run(send_all)


def measure(
    workers: int, url: str, r: Any, tmp: Path, args: argparse.Namespace, checkout: Path = ROOT
) -> float:
    prefix = f"s{uuid.uuid4().hex[:6]}"
    config = write_config(tmp, prefix, args)
    pipeline = Pipeline.load(config)
    keys = pipeline.config.keys
    messages = int(args.seconds * workers * args.concurrency / (args.call_ms / 1000))
    procs = start_workers(workers, config, url, checkout)
    try:
        poll(
            lambda: sum(1 for _ in r.scan_iter(match=keys.heartbeat(AGENT, "*"))) == workers,
            60,
            f"{workers} workers to start",
        )
        started = time.perf_counter()
        produce(url, pipeline, messages)
        streams = pipeline.routing.inboxes(AGENT)
        poll(lambda: consumed(r, streams, messages), 600, "all messages acknowledged")
        return messages / (time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}"
    )


def run(url: str, r: Any, tmp: Path, args: argparse.Namespace) -> dict[int, float]:
    """Throughput per worker count (this checkout, the median of the rounds); every other
    ``--checkout`` runs right after this one's run of the same count and round."""
    checkouts = {"": ROOT} | {
        f" [{name}]": Path(path).resolve()
        for name, path in (item.split("=", 1) for item in args.checkout)
    }
    rates: dict[tuple[int, str], list[float]] = {}
    for round_ in range(args.rounds):
        for n in args.workers:
            for label, path in checkouts.items():
                rate = measure(n, url, r, tmp, args, path)
                rates.setdefault((n, label), []).append(rate)
                print(
                    f"  round {round_ + 1}: {n} worker process(es){label}: {rate:7.1f} msg/s",
                    flush=True,
                )
    for (n, label), values in rates.items():
        ordered = sorted(values)
        print(
            f"{n} worker process(es){label}: median {ordered[len(ordered) // 2]:7.1f} msg/s "
            f"(min {ordered[0]:.1f}, max {ordered[-1]:.1f}, {len(values)} rounds)"
        )
    return {n: sorted(rates[(n, "")])[len(rates[(n, "")]) // 2] for n in args.workers}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help="target duration of each run (sets the message count)",
    )
    parser.add_argument("--call-ms", type=float, default=100.0, help="simulated call per message")
    parser.add_argument("--concurrency", type=int, default=1, help="in-flight handlers/process")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--cluster", action="store_true", help="local 3-master cluster")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run the workers of the checkout at PATH, labelled NAME",
    )
    args = parser.parse_args()
    if args.cluster and args.shards == 1:
        args.shards = 4
    print(f"machine: {machine()}")
    print(
        f"agent: {args.call_ms:.0f} ms async call per message, concurrency {args.concurrency} "
        f"per process, {args.shards} inbox shard(s), "
        f"{'3-master cluster' if args.cluster else 'single server'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.cluster:
            with LocalCluster(Path(tmp) / "cluster", masters=3) as cluster:
                r = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
                results = run(cluster.url, r, Path(tmp), args)
        else:
            with EmbeddedServer(Path(tmp) / "redis", persistent=False) as server:
                r = redis.Redis.from_url(server.url)
                results = run(server.url, r, Path(tmp), args)
    low, high = min(results), max(results)
    print(f"throughput ratio {high} vs {low} process(es): {results[high] / results[low]:.2f}x")


if __name__ == "__main__":
    main()
