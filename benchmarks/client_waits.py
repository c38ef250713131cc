"""Many concurrent reply waits in one client process: connections, memory, time.

Each scenario runs in a fresh child process (its RSS delta is its own) against one embedded
server started here; all scenarios run in the same run:

* ``reader``: N concurrent ``Client.wait_reply`` (the client's ReplyReader).
* ``requests``: N concurrent ``Client.request`` (publish + wait) answered by an in-process
  responder that writes each request's reply with the real codec (its connection excluded).
* ``floor``: N tasks that only wait (an event, under a timeout), no Redis: what any waiter
  costs in this process whatever reads its reply.
* ``per-wait``: the old approach, one blocking XREAD loop per wait on the client's shared
  redis-py client with redis-py's default pool (100 connections, raising past them), as
  the client had before; errors counted.
* ``per-wait-pool``: the same with a pool large enough for every wait (``--baseline-waits``).

For each: the peak number of connections the client held (``INFO clients``, sampled every
20 ms, minus the benchmark's own), RSS growth from before the waits to when all wait, the time
until all N wait, and the time from writing the N replies until the last wait returned.

    .venv/bin/python benchmarks/client_waits.py [--waits 10000] [--baseline-waits 1000]
"""

from __future__ import annotations

import argparse
import json
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

import anyio
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.model import PipelineConfig  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.connect import connect  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from protocols.core import UserRequest  # noqa: E402
from protocols.envelope import AgentMessage, utcnow  # noqa: E402

SCENARIOS = ("reader", "requests", "floor", "per-wait", "per-wait-pool")


def pipeline_for(prefix: str) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["benchmarks"],
            "worker": {"trace": False},
            "agents": {"echo": {"class": "benchmarks.agents:Noop"}},
        }
    )
    return Pipeline.build(config)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reply_entry(client: Client, request: AgentMessage) -> dict[bytes, bytes]:
    reply = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=request.correlation_id,
        from_agent="echo",
        to_agent="client",
        message_type=UserRequest.message_type,
        schema_version=1,
        payload=dict(request.payload),
        timestamp=utcnow(),
    )
    assert request.reply_to is not None
    return client.codec.encode(reply, request.reply_to)


class Probe:
    """Samples the server's client count; records the peak above the baseline."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.baseline = 0
        self.peak = 0

    async def clients(self) -> int:
        return int((await self.admin.info("clients"))["connected_clients"])

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, await self.clients() - self.baseline)
            await anyio.sleep(0.02)


async def old_wait(redis: Any, stream: str, timeout: float) -> None:
    """The wait before ReplyReader: one blocking XREAD loop per waiting request."""
    with anyio.fail_after(timeout):
        while True:
            if await redis.xread({stream: b"0-0"}, count=10, block=1000):
                return


async def scenario(name: str, url: str, waits: int) -> dict[str, Any]:
    prefix = "b" + uuid.uuid4().hex[:8]
    pipeline = pipeline_for(prefix)
    if name.startswith("per-wait"):  # the client before: redis-py's own pool (100, raising)
        size = waits + 10 if name == "per-wait-pool" else None
        client = Client(Redis.from_url(url, max_connections=size), pipeline)
    else:
        client = Client(connect(url).redis, pipeline)
    async with connect(url).redis as admin, connect(url).redis as writer, client:
        await writer.ping()
        probe = Probe(admin)
        probe.baseline = await probe.clients()
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            if name == "requests":
                result = await run_requests(client, writer, waits)
            else:
                result = await run_waits(name, client, writer, waits)
            tg.cancel_scope.cancel()
    return {"scenario": name, "waits": waits, "connections": probe.peak, **result}


async def run_waits(name: str, client: Client, writer: Any, waits: int) -> dict[str, Any]:
    messages = [client.new_message(UserRequest(text=f"r{i}"), to="echo") for i in range(waits)]
    outcome = {"ok": 0, "errors": 0, "waiting": 0}
    errors: dict[str, int] = {}

    answered = anyio.Event()

    async def wait(message: AgentMessage) -> None:
        assert message.reply_to is not None
        try:
            if name == "reader":
                await client.wait_reply(message, 300)
            elif name == "floor":
                outcome["waiting"] += 1
                with anyio.fail_after(300):
                    await answered.wait()
            else:
                await old_wait(client.redis, message.reply_to, 300)
            outcome["ok"] += 1
        except Exception as exc:
            outcome["errors"] += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    rss0, started = rss_bytes(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for message in messages:
            tg.start_soon(wait, message)
        await until(lambda: waiting(name, client, outcome, waits))
        waiting_s, rss = time.perf_counter() - started, rss_bytes() - rss0
        replied = time.perf_counter()
        answered.set()
        for start in range(0, waits, 1000):
            async with writer.pipeline(transaction=False) as pipe:
                for message in messages[start : start + 1000]:
                    pipe.xadd(message.reply_to, reply_entry(client, message))
                await pipe.execute()
    done_s = time.perf_counter() - replied
    kinds = " ".join(f"{kind}:{n}" for kind, n in errors.items())
    timing = {"all_waiting_s": waiting_s, "replies_s": done_s}
    del outcome["waiting"]
    return {**outcome, "kinds": kinds, "rss_mib": rss / 2**20, **timing}


def waiting(name: str, client: Client, outcome: dict[str, int], waits: int) -> bool:
    """All waits registered (reader) or started and not failed (old approach)."""
    if name == "reader":
        return client.replies.waiting() == waits
    if name == "floor":
        return outcome["waiting"] == waits
    pool = client.redis.connection_pool
    return outcome["errors"] + len(pool._in_use_connections) >= waits


async def run_requests(client: Client, writer: Any, waits: int) -> dict[str, Any]:
    inbox = client.pipeline.routing.stream_for("echo", uuid.uuid4())
    done = {"ok": 0}

    async def request(i: int) -> None:
        await client.request(f"request {i}", timeout=300)
        done["ok"] += 1

    async def respond() -> None:
        last, answered = b"0-0", 0
        while answered < waits:
            for _stream, entries in await writer.xread({inbox: last}, count=500, block=100) or []:
                async with writer.pipeline(transaction=False) as pipe:
                    for entry_id, fields in entries:
                        last = entry_id
                        message = client.codec.decode(fields, inbox).message
                        pipe.xadd(message.reply_to, reply_entry(client, message))
                    await pipe.execute()
                answered += len(entries)

    rss0, started = rss_bytes(), time.perf_counter()
    peak_rss = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(respond)
        for i in range(waits):
            tg.start_soon(request, i)
        while done["ok"] < waits:
            peak_rss = max(peak_rss, rss_bytes() - rss0)
            await anyio.sleep(0.05)
    return {"ok": done["ok"], "rss_mib": peak_rss / 2**20, "total_s": time.perf_counter() - started}


async def until(condition: Callable[[], bool], timeout: float = 300) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - a count polled, nothing to wait on
            await anyio.sleep(0.01)


def run_child(name: str, url: str, waits: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--scenario", name, "--url", url, "--waits", str(waits)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"scenario {name} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def show(row: dict[str, Any]) -> str:
    parts = [f"{row['scenario']:>14} waits={row['waits']:<6} connections={row['connections']:<6}"]
    parts.append(f"rss=+{row['rss_mib']:.1f} MiB")
    for key in ("all_waiting_s", "replies_s", "total_s"):
        if key in row:
            parts.append(f"{key}={row[key]:.2f}")
    parts.append(f"ok={row.get('ok', '-')} errors={row.get('errors', 0)} {row.get('kinds', '')}")
    return "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=10_000)
    parser.add_argument("--baseline-waits", type=int, default=1_000)
    parser.add_argument("--scenario", choices=SCENARIOS)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(anyio.run(scenario, args.scenario, args.url, args.waits)))
        return
    python = platform.python_version()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {python}")
    with EmbeddedServer(Path(tempfile.mkdtemp()), persistent=False) as server:
        plan = [
            ("reader", args.waits),
            ("requests", args.waits),
            ("floor", args.waits),
            ("per-wait", args.waits),
            ("per-wait-pool", args.baseline_waits),
            ("reader", args.baseline_waits),
        ]
        for name, waits in plan:
            print(show(run_child(name, server.url, waits)), flush=True)


if __name__ == "__main__":
    main()
