"""Worker CPU per message at a low, steady request rate (issue 17: small batches).

Starts an embedded Redis and one worker process of a one-stage pipeline (a no-op answering
stage, ``benchmarks.agents:Answer``), publishes ``--messages`` requests at ``--rate`` per
second and reads the worker's CPU time (user + system, /proc) around each round. Prints the
microseconds of worker CPU per message per round and the 1-minute load average (wall-clock
CPU is noisy on a busy machine: alternate base and branch runs). ``--py-spy FILE`` records a
sampling profile of the worker during the last round (py-spy must be installed).

    .venv/bin/python benchmarks/low_rate.py --rate 200 --messages 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.model import PipelineConfig  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def one_round(client: Client, pid: int, rate: float, messages: int) -> tuple[float, float]:
    """Microseconds of worker CPU per message: (user, system)."""
    before = cpu_times(pid)
    started = time.perf_counter()
    for i in range(messages):
        await client.publish(f"hello {i}")
        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
    await asyncio.sleep(0.5)  # the last replies
    after = cpu_times(pid)
    return tuple(1e6 * (a - b) / messages for a, b in zip(after, before, strict=True))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", default="", help="record a py-spy profile (raw) here")
    args = parser.parse_args()
    cfg = {
        "key_prefix": "low",
        "allowed_modules": ["benchmarks"],
        "agents": {"s1": {"class": "benchmarks.agents:Answer"}},
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "r", persistent=False) as server,
    ):
        config = Path(tmp) / "c.yaml"
        config.write_text(yaml.safe_dump(cfg))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_runtime",
                "worker",
                "s1",
                "--config",
                str(config),
                "--redis-url",
                server.url,
            ],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"worker pid {worker.pid}", flush=True)
        time.sleep(4)  # the worker starts
        pipeline = Pipeline.build(PipelineConfig.model_validate(cfg))

        async def run() -> None:
            async with Client.connect(server.url, pipeline) as client:
                for n in range(args.rounds):
                    spy = None
                    if args.py_spy and n == args.rounds - 1:
                        spy = subprocess.Popen(  # noqa: ASYNC220
                            [
                                str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "--nonblocking",
                                "-r",
                                "1000",
                                "-f",
                                "raw",
                                "-o",
                                args.py_spy,
                                "-p",
                                str(worker.pid),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        await asyncio.sleep(1)
                    user, system = await one_round(client, worker.pid, args.rate, args.messages)
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait()
                    load = os.getloadavg()[0]
                    print(
                        f"round {n + 1}: worker CPU per msg {user + system:.0f} us "
                        f"(user {user:.0f}, system {system:.0f})  (load {load:.1f})"
                    )

        asyncio.run(run())
        worker.send_signal(2)
        worker.wait()


if __name__ == "__main__":
    main()
