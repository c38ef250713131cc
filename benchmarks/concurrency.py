"""One worker process of an I/O-bound agent (every message awaits a simulated 100 ms call,
benchmarks/scaling_agents.py SlowCall) at several ``concurrency`` values: msg/s, and the
memory an in-flight handler costs (issue 17, deliverable 4).

    .venv/bin/python benchmarks/concurrency.py [--concurrency 32 128 256 512 1024] [--messages 4000]

Per value: one ``agent-runtime worker`` with default settings but ``concurrency`` (traces on);
its idle RSS once ready; ``--messages`` requests published with ``Client.publish_many``;
msg/s from the first publish until the group has acked them all; the worker's peak RSS while
it drained (sampled every 20 ms from /proc), and (peak - idle) / concurrency: the memory per
in-flight handler (the handler's task, its delivery, envelope and context).
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
from pathlib import Path

import anyio
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.model import PipelineConfig  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.signing import ensure_keyring  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def acked(r: redis.Redis, stream: str, group: str) -> int:
    try:
        info = {g["name"]: g for g in r.xinfo_groups(stream)}.get(group.encode())
    except redis.ResponseError:
        return 0
    if not info or not info["entries-read"]:
        return 0
    return int(info["entries-read"]) - int(info["pending"])


def one(r: redis.Redis, url: str, tmp: Path, concurrency: int | None, n: int) -> str:
    prefix = f"c{uuid.uuid4().hex[:6]}"
    worker = {} if concurrency is None else {"concurrency": concurrency}
    raw = {
        "key_prefix": prefix,
        "allowed_modules": ["benchmarks"],
        "worker": worker,
        "agents": {"slow": {"class": "benchmarks.scaling_agents:SlowCall"}},
    }
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(raw))
    pipeline = Pipeline.build(PipelineConfig.model_validate(raw))
    effective = pipeline.worker_settings("slow").concurrency
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENT_RUNTIME_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "agent_runtime", "worker", "slow", "--config", str(path)]
    proc = subprocess.Popen(
        [*argv, "--redis-url", url], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not r.keys(pipeline.config.keys.heartbeat_pattern()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("worker did not start")
            time.sleep(0.02)
        time.sleep(0.5)  # settled
        idle = rss_kb(proc.pid)
        inbox = pipeline.config.keys.inbox("slow")

        async def publish() -> None:
            async with Client.connect(url, pipeline) as client:
                for start in range(0, n, 500):
                    await client.publish_many(["call"] * min(500, n - start))

        started = time.perf_counter()
        anyio.run(publish)
        peak = idle
        while acked(r, inbox, "slow") < n:
            peak = max(peak, rss_kb(proc.pid))
            if time.perf_counter() - started > 600:
                raise TimeoutError("not drained")
            time.sleep(0.02)
        rate = n / (time.perf_counter() - started)
        per = (peak - idle) / effective
        label = f"{effective}" + (" (default)" if concurrency is None else "")
        return (
            f"  concurrency {label:14s} {rate:8,.0f} msg/s  idle RSS {idle / 1024:6.1f} MB  "
            f"peak {peak / 1024:6.1f} MB  {per:6.1f} KB per in-flight handler  "
            f"(load {os.getloadavg()[0]:.2f})"
        )
    finally:
        proc.terminate()
        proc.wait(30)
        r.flushall()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128, 256, 512, 1024])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--default", action="store_true", help="also the configured default")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load {os.getloadavg()}"
    )
    ensure_keyring()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        r = redis.Redis.from_url(server.url)
        values: list[int | None] = [*args.concurrency, *([None] if args.default else [])]
        for value in values:
            print(one(r, server.url, Path(tmp), value, args.messages), flush=True)


if __name__ == "__main__":
    main()
