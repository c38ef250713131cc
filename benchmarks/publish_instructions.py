"""CPU instructions per message of a producer, counted by valgrind (callgrind; immune to the
load of a shared machine): a raw redis-py loop (the producer phase of benchmarks/pipeline.py:
a uuid + JSON body per message, XADDs pipelined in batches), ``Client.publish_many`` in the
same batches, and ``Client.publish`` one at a time (issue 17, lean publish).

    .venv/bin/python benchmarks/publish_instructions.py [--messages 2000] [--batch 100]

Each variant runs in its own valgrind process; counting is on only while it publishes (the
client connected, its clock read and its scripts loaded before).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

import anyio
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from callgrind import collected, instrument  # noqa: E402

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.model import PipelineConfig  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.signing import ensure_keyring  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402

TEXT = "benchmark request: list files in configs"
VARIANTS = ("raw", "publish_many", "publish")


def pipeline() -> Pipeline:
    config = {
        "key_prefix": "pi",
        "allowed_modules": ["benchmarks"],
        "agents": {f"s{i}": {"class": f"benchmarks.agents:Stage{i}"} for i in range(1, 7)},
    }
    return Pipeline.build(PipelineConfig.model_validate(config))


def run_raw(url: str, n: int, batch: int) -> None:
    r = redis.Redis.from_url(url)
    r.ping()
    instrument(True)
    for start in range(0, n, batch):
        with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + batch)):
                body = json.dumps({"id": str(uuid.uuid4()), "text": TEXT, "n": i}).encode()
                pipe.xadd("raw", {b"id": uuid.uuid4().bytes, b"body": body})
            pipe.execute()
    instrument(False)


async def run_client(url: str, n: int, batch: int, many: bool) -> None:
    async with Client.connect(url, pipeline()) as client:
        await client.publish_many([TEXT, TEXT])  # connected, clock read, scripts loaded
        instrument(True)
        if many:
            for start in range(0, n, batch):
                await client.publish_many([TEXT] * min(batch, n - start))
        else:
            for _ in range(n):
                await client.publish(TEXT)
        instrument(False)


def measure(variant: str, n: int, batch: int) -> float:
    args = ["--variant", variant, "--messages", str(n), "--batch", str(batch)]
    return collected(__file__, args) / n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", action="append", choices=VARIANTS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is None:
        raw = None
        for variant in args.only or VARIANTS:
            count = measure(variant, args.messages, args.batch)
            raw = count if variant == "raw" else raw
            ratio = "" if raw is None or variant == "raw" else f"  ({count / raw:.2f}x raw)"
            print(f"{variant:13s} {count:9,.0f} instructions/message{ratio}", flush=True)
        return
    ensure_keyring()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        if args.variant == "raw":
            run_raw(server.url, args.messages, args.batch)
        else:
            anyio.run(run_client, server.url, args.messages, args.batch, args.variant != "publish")


if __name__ == "__main__":
    main()
