"""The HTTP gateway under load: one ``agent-runtime serve`` process (a child), one worker
process of a one-hop agent (``benchmarks.agents:Answer``), one embedded server; all in the
same run:

* ``rate``: a sustained request rate (``--rate`` per second for ``--seconds``), alternating
  between the Python client (``Client.request``: publish + wait, in this process) and the
  gateway (``POST /v1/requests`` then ``POST /v1/requests/{cid}:wait``, httpx). Latency per
  request, p50/p99 of each, and the difference: what the gateway adds over the client.
* ``sse``: ``--sse`` requests published while the worker is stopped, one SSE stream per
  request opened through the gateway (all waiting), then the worker started: the time from
  each reply's entry (its id's milliseconds) to the ``end`` event at the SSE client, p50/p99;
  then, as the baseline, the same number of ``Client.wait_reply`` waits in this process, the
  same way. Redis connections added while all streams wait (``INFO clients``), gateway RSS.

    .venv/bin/python benchmarks/gateway.py [--rate 20] [--seconds 20] [--sse 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.client import Client  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.testing import WorkerProcess  # noqa: E402
from agent_runtime.transport.connect import connect  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from protocols.core import UserRequest  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
    }


class Setup:
    """The server, the pipeline file, the worker and the gateway process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = EmbeddedServer(root / "redis", persistent=False).start()
        self.url = self.server.url
        self.config = root / "pipeline.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "key_prefix": "bgw" + uuid.uuid4().hex[:6],
                    "allowed_modules": ["benchmarks"],
                    "agents": {"answer": {"class": "benchmarks.agents:Answer"}},
                    "worker": {"block_ms": 200},
                }
            )
        )
        self.pipeline = Pipeline.load(self.config)
        self.token = secrets.token_urlsafe(24)
        digest = hashlib.sha256(self.token.encode()).hexdigest()
        (root / "gateway.yaml").write_text(
            yaml.safe_dump(
                {
                    "tokens": [{"name": "bench", "sha256": digest, "scopes": ["submit", "read"]}],
                    "rate_limit": {"requests": 10_000_000, "per_seconds": 60},
                }
            )
        )
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.worker: WorkerProcess | None = None
        self.port = free_port()
        self.gateway = subprocess.Popen(
            [
                sys.executable, "-m", "agent_runtime", "serve",
                "--config", str(self.config), "--redis-url", self.url,
                "--port", str(self.port), "--gateway-config", str(root / "gateway.yaml"),
            ],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

    def start_worker(self) -> None:
        self.worker = WorkerProcess(
            "answer", config=self.config, redis_url=self.url, env=self.env,
            log_path=self.root / "worker.log",
        ).start()  # fmt: skip
        with redis.Redis.from_url(self.url) as sync:
            self.worker.wait_ready(sync, self.pipeline.config.keys, timeout=60)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(15)
            self.worker = None

    def gateway_rss_mib(self) -> float:
        with open(f"/proc/{self.gateway.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def gateway_cpu_s(self) -> float:
        """User + system CPU seconds the gateway process used so far."""
        with open(f"/proc/{self.gateway.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.stop_worker()
        self.gateway.send_signal(signal.SIGTERM)
        self.gateway.wait(20)
        self.server.stop()


async def rate_phase(s: Setup, rate: float, seconds: float) -> dict[str, Any]:
    client = Client(connect(s.url).redis, s.pipeline)
    headers = {"Authorization": f"Bearer {s.token}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    times: dict[str, list[float]] = {"client": [], "gateway": []}
    errors = {"client": 0, "gateway": 0}

    async def by_client(i: int) -> None:
        started = time.perf_counter()
        reply = await client.request(f"c{i}", timeout=30)
        assert reply.message.message_type == "bench.answered"
        times["client"].append(time.perf_counter() - started)

    async def by_gateway(http: httpx.AsyncClient, i: int) -> None:
        started = time.perf_counter()
        posted = await http.post("/v1/requests", json={"text": f"g{i}"})
        cid = posted.json()["correlation_id"]
        view = (await http.post(f"/v1/requests/{cid}:wait", params={"timeout": 30})).json()
        assert view["state"] == "succeeded", view
        times["gateway"].append(time.perf_counter() - started)

    async def guarded(kind: str, coro: Any) -> None:
        try:
            await coro
        except Exception:
            errors[kind] += 1

    total = int(rate * seconds)
    async with httpx.AsyncClient(
        base_url=s.base, headers=headers, limits=limits, timeout=60
    ) as http:
        await by_gateway(http, -1)  # warm both paths before measuring
        await by_client(-1)
        times = {"client": [], "gateway": []}
        tasks = []
        cpu0 = s.gateway_cpu_s()
        t0 = time.perf_counter()
        for i in range(total):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            if i % 2:
                coro, kind = by_gateway(http, i), "gateway"
            else:
                coro, kind = by_client(i), "client"
            tasks.append(asyncio.create_task(guarded(kind, coro)))
        await asyncio.gather(*tasks)
    cpu = s.gateway_cpu_s() - cpu0
    await client.aclose()
    out: dict[str, Any] = {k: {**summary(v), "errors": errors[k]} for k, v in times.items()}
    out["gateway_cpu_ms_per_request"] = round(cpu * 1000 / max(len(times["gateway"]), 1), 2)
    out["added_p50_ms"] = round(out["gateway"]["p50_ms"] - out["client"]["p50_ms"], 2)
    out["added_p99_ms"] = round(out["gateway"]["p99_ms"] - out["client"]["p99_ms"], 2)
    return out


async def connected(admin: Any) -> int:
    return int((await admin.info("clients"))["connected_clients"])


async def sse_phase(s: Setup, streams: int) -> dict[str, Any]:
    """``streams`` SSE clients, all waiting before the worker starts."""
    s.stop_worker()
    admin = connect(s.url).redis
    headers = {"Authorization": f"Bearer {s.token}"}
    ends: dict[str, float] = {}
    failures = 0
    async with httpx.AsyncClient(base_url=s.base, headers=headers, timeout=120) as http:
        cids = []
        for i in range(streams):
            posted = await http.post("/v1/requests", json={"text": f"s{i}"})
            cids.append(posted.json()["correlation_id"])
        opened = 0
        all_open = asyncio.Event()

        async def follow(cid: str) -> None:
            nonlocal opened, failures
            try:
                async for event, data in sse_events(s, f"/v1/requests/{cid}/events"):
                    if event == "open":
                        opened += 1
                        if opened == streams:
                            all_open.set()
                    elif event == "end":
                        ends[cid] = time.time()
                        assert json.loads(data)["state"] == "succeeded"
            except Exception:
                failures += 1

        before = await connected(admin)
        tasks = [asyncio.create_task(follow(cid)) for cid in cids]
        await all_open.wait()
        await asyncio.sleep(1.0)  # every stream registered with the shared readers
        conns, rss = await connected(admin) - before, s.gateway_rss_mib()
        idle0, idle_t0 = s.gateway_cpu_s(), time.perf_counter()
        await asyncio.sleep(5)  # the cost of 1,000 open, quiet streams
        idle_cpu = (s.gateway_cpu_s() - idle0) / (time.perf_counter() - idle_t0)
        cpu0 = s.gateway_cpu_s()
        started = time.perf_counter()
        s.start_worker()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        cpu = s.gateway_cpu_s() - cpu0
    reply_ms = await reply_times(admin, s.pipeline, list(ends))
    await admin.aclose()
    return {
        "streams": streams,
        "ended": len(ends),
        "failures": failures,
        "redis_connections_while_waiting": conns,
        "gateway_rss_mib": round(rss, 1),
        "all_done_s": round(elapsed, 2),
        "gateway_cpu_s_while_ending": round(cpu, 2),
        "gateway_cpu_share_while_quiet": round(idle_cpu, 3),
        "end_after_reply": summary([ends[c] - reply_ms[c] for c in ends]),
    }


async def sse_events(s: Setup, path: str) -> Any:
    """A minimal SSE client on its own socket (HTTP/1.1, chunked): ("open", "") once the
    headers arrived, then (event, data) per event. httpx's one pool for 1,000 streams costs
    the benchmark's side more than the gateway's (its pool scans every connection per event)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {s.token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        status = await reader.readline()
        assert b" 200 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        yield "open", ""
        buffer = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                return
            buffer += await reader.readexactly(size + 2)
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                )
                if "event" in fields:
                    yield fields["event"], fields.get("data", "")
    finally:
        writer.close()


async def wait_phase(s: Setup, waits: int) -> dict[str, Any]:
    """The baseline: ``waits`` ``Client.wait_reply`` in this process, all waiting before the
    worker starts."""
    s.stop_worker()
    client = Client(connect(s.url).redis, s.pipeline)
    messages = [await client.publish(UserRequest(text=f"b{i}")) for i in range(waits)]
    waited: dict[str, float] = {}

    async def wait(message: Any) -> None:
        await client.wait_reply(message, 120)
        waited[str(message.correlation_id)] = time.time()

    tasks = [asyncio.create_task(wait(m)) for m in messages]
    while client.replies.waiting() < waits:  # noqa: ASYNC110 - the reader has no event for it
        await asyncio.sleep(0.05)
    started = time.perf_counter()
    s.start_worker()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    reply_ms = await reply_times(client.redis, s.pipeline, list(waited))
    await client.aclose()
    return {
        "waits": waits,
        "all_done_s": round(elapsed, 2),
        "end_after_reply": summary([waited[c] - reply_ms[c] for c in waited]),
    }


async def reply_times(admin: Any, pipeline: Pipeline, cids: list[str]) -> dict[str, float]:
    """Each request's reply time: the milliseconds of its reply entry's id."""
    keys = pipeline.config.keys
    out = {}
    async with admin.pipeline(transaction=False) as pipe:
        for cid in cids:
            pipe.xrange(keys.reply(cid), count=1)
        for cid, rows in zip(cids, await pipe.execute(), strict=True):
            entry_id = rows[0][0].decode()
            out[cid] = int(entry_id.split("-")[0]) / 1000
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(Path(tmp))
        try:
            s.start_worker()
            rate = await rate_phase(s, args.rate, args.seconds)
            sse = await sse_phase(s, args.sse)
            client = await wait_phase(s, args.sse)
        finally:
            s.close()
    return {"rate": rate, "sse": sse, "client_waits": client}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sse", type=int, default=1000, help="concurrent SSE clients")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
