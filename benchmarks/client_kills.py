"""Client waits under repeated connection kills: the issue-12 measurement, repeatable.

One request every 0.2 s for 60 s (300), each answered 0.5 s after it arrives by an in-process
responder (real codec, real reply keys; it retries its own writes), while the server kills
every normal client connection but the benchmark's own every 2 s (``CLIENT KILL TYPE normal
SKIPME yes``). Counts replies received and wait errors, for ``Client.wait_reply`` and for the
approach before it (one blocking XREAD per wait on the shared client), in the same run; and
the connections the server accepted meanwhile (``total_connections_received``).

    .venv/bin/python benchmarks/client_kills.py [--requests 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
from redis import exceptions as redis_errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.transport.connect import connect  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from benchmarks.client_waits import pipeline_for, reply_entry  # noqa: E402
from protocols.core import UserRequest  # noqa: E402
from protocols.envelope import AgentMessage  # noqa: E402


async def old_wait(client: Client, message: AgentMessage, timeout: float) -> None:
    assert message.reply_to is not None
    with anyio.fail_after(timeout):
        while not await client.redis.xread({message.reply_to: b"0-0"}, count=10, block=1000):
            pass


class Responder:
    """Answers each request in the inbox 0.5 s after reading it; survives the kills."""

    def __init__(self, url: str, client: Client) -> None:
        self.redis = connect(url).redis
        self.client = client
        self.inbox = client.pipeline.routing.stream_for("echo", uuid.uuid4())

    async def run(self) -> None:
        last = b"0-0"
        async with self.redis, anyio.create_task_group() as tg:
            while True:
                try:
                    found = await self.redis.xread({self.inbox: last}, count=100, block=200)
                except redis_errors.ConnectionError:
                    await anyio.sleep(0.05)
                    continue
                for _stream, entries in found or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        decoded = self.client.codec.decode(fields, self.inbox)
                        tg.start_soon(self.answer, decoded.message)

    async def answer(self, request: AgentMessage) -> None:
        await anyio.sleep(0.5)
        while True:
            try:
                entry = reply_entry(self.client, request)
                await self.redis.xadd(request.reply_to, entry)
                return
            except redis_errors.ConnectionError:
                await anyio.sleep(0.05)


async def kill_every(admin: Any, seconds: float, stats: dict[str, int]) -> None:
    while True:
        await anyio.sleep(seconds)
        await admin.execute_command("CLIENT KILL TYPE normal SKIPME yes")
        stats["kills"] += 1


async def scenario(url: str, mode: str, requests: int) -> dict[str, Any]:
    stats = {"ok": 0, "wait_errors": 0, "publish_errors": 0, "kills": 0}
    async with connect(url).redis as admin, Client.connect(url, pipeline_for("ks")) as client:
        before = (await admin.info("stats"))["total_connections_received"]

        async def one(i: int) -> None:
            try:
                message = await client.publish(UserRequest(text=f"r{i}"), to="echo", timeout=60)
            except redis_errors.RedisError:
                stats["publish_errors"] += 1
                return
            try:
                if mode == "reader":
                    await client.wait_reply(message, 60)
                else:
                    await old_wait(client, message, 60)
                stats["ok"] += 1
            except Exception:
                stats["wait_errors"] += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(Responder(url, client).run)
            tg.start_soon(kill_every, admin, 2.0, stats)
            async with anyio.create_task_group() as sending:
                for i in range(requests):
                    sending.start_soon(one, i)
                    await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
        accepted = (await admin.info("stats"))["total_connections_received"] - before
    return {"mode": mode, "requests": requests, **stats, "connections_accepted": accepted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with EmbeddedServer(Path(tempfile.mkdtemp()), persistent=False) as server:
        for mode in ("reader", "per-wait"):
            print(anyio.run(scenario, server.url, mode, args.requests), flush=True)


if __name__ == "__main__":
    main()
