"""The Redis server's side of one worker: calls and microseconds per call of each command
(``INFO commandstats``; commands run inside a script are counted under their own names too)
and the server's CPU per message (``INFO cpu``), and this process's CPU per message (the worker
runs in it, with the benchmark's few polls), while one worker consumes N pre-filled
messages -- the same run as benchmarks/instructions.py's runtime variant, without valgrind.

    .venv/bin/python benchmarks/server_cost.py [--messages 3000] [--agent forward] [--batch 4]

The statistics are reset when the inbox is filled and read when the worker has acked every
entry (benchmarks/instructions.py's ``instrument`` hook). Microseconds are the server's own
clock: compare runs of the same load, or read the calls per message, which do not move.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instructions

from agent_runtime.cli import worker as cli_worker
from agent_runtime.transport.embedded import EmbeddedServer


def cpu_seconds(r: redis.Redis) -> float:
    info: dict[str, Any] = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def report(stats: dict[str, Any], cpu: float, messages: int) -> None:
    print(f"server CPU per message: {cpu / messages * 1e6:8.1f} us")
    print(f"{'command':22s} {'calls/msg':>10s} {'usec/call':>10s} {'usec/msg':>9s}")
    rows = []
    for name, row in stats.items():
        if not name.startswith("cmdstat_") or name in ("cmdstat_config", "cmdstat_info"):
            continue
        rows.append((row["usec"], name[8:], row["calls"], row["usec_per_call"]))
    for usec, name, calls, per_call in sorted(rows, reverse=True):
        print(f"{name:22s} {calls / messages:10.3f} {per_call:10.2f} {usec / messages:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--agent", choices=sorted(instructions.AGENTS), default="forward")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        r = redis.Redis.from_url(server.url)
        marks: dict[str, Any] = {}

        def instrument(on: bool) -> None:  # replaces callgrind's switch
            if on:
                r.config_resetstat()
                marks["cpu"], marks["worker"] = cpu_seconds(r), time.process_time()
            else:
                marks["worker"] = time.process_time() - marks["worker"]
                marks["cpu"] = cpu_seconds(r) - marks["cpu"]
                marks["stats"] = r.info("commandstats")

        instructions.instrument = instrument
        anyio.run(
            instructions.run_worker,
            server.url,
            Path(tmp),
            args.messages,
            args.trace,
            r,
            args.agent,
            args.batch,
            backend_options=cli_worker.loop_options(),
        )
    print(f"{args.agent}, batch {args.batch}, traces {'on' if args.trace else 'off'}")
    print(f"worker process CPU per message: {marks['worker'] / args.messages * 1e6:8.1f} us")
    report(marks["stats"], marks["cpu"], args.messages)


if __name__ == "__main__":
    main()
