"""Fleet rate limit: N worker processes against a fake OpenAI API that counts the requests it
receives per minute, with **real 60 s windows**. The server's count over any 60 s window (and
so over any fixed minute bucket) must never exceed the account's configured requests per
minute; the benchmark reports that count, the achieved rate, and a raw baseline run in the
same run (the same workers and requests without a limit: what the provider would have seen).

    .venv/bin/python benchmarks/ratelimit.py [--workers 4] [--rpm 60] [--requests 150]
                                             [--latency-ms 200] [--window 60] [--no-baseline]

Each request is one ``user.request`` to an ``LLMCaller`` agent (tests/fixtures/llm_caller.py:
one structured OpenAI call through the official SDK, no cache) whose account
``bench-openai`` has ``requests_per_minute: RPM``. The fake API (tests/llmfakes) answers
after ``--latency-ms``. Every request is published at once, with a deadline long enough for
all windows, so the fleet has to queue them in the limit.
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
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.codec import Codec  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from protocols.core import UserRequest  # noqa: E402
from protocols.envelope import AgentMessage, utcnow  # noqa: E402
from tests.llmfakes import openai_api  # noqa: E402
from tests.llmfakes.server import Reply  # noqa: E402

AGENT = "caller"
ACCOUNT = "bench-openai"


def write_config(
    tmp: Path, prefix: str, base_url: str, args: argparse.Namespace, limit: bool
) -> Path:
    llm: dict[str, Any] = {"provider": "openai", "base_url": base_url, "cache_ttl": 0}
    config: dict[str, Any] = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "worker": {
            "concurrency": args.concurrency,
            "batch_size": args.concurrency,
            "block_ms": 100,
            "heartbeat_interval": 0.5,
            "handler_timeout": 3600,
            "reclaim_idle": 7200,
            "trace": False,
        },
        "agents": {
            AGENT: {
                "class": "tests.fixtures.llm_caller:LLMCaller",
                "config": {"state_dir": str(tmp), "llm": llm},
                "policies": {"calls": {"llm.openai": {"retry": {"attempts": 1}}}},
            }
        },
    }
    if limit:
        llm["account"] = ACCOUNT
        config["llm"] = {
            "accounts": {
                ACCOUNT: {
                    "provider": "openai",
                    "requests_per_minute": args.rpm,
                    "window_seconds": args.window,
                }
            }
        }
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_workers(n: int, config: Path, url: str) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENT_RUNTIME_LOG_LEVEL": "warning",
        "OPENAI_API_KEY": "sk-bench",
    }
    argv = [sys.executable, "-m", "agent_runtime", "worker", AGENT]
    return [
        subprocess.Popen(
            [*argv, "--slot", str(slot), "--config", str(config), "--redis-url", url],
            env=env,
            cwd=ROOT,
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
        time.sleep(0.05)


def publish(r: Any, pipeline: Pipeline, n: int, deadline_s: float) -> list[str]:
    keys, codec = pipeline.config.keys, Codec(pipeline.schemas)
    replies = []
    now = utcnow()
    for i in range(n):
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="bench",
            to_agent=AGENT,
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=f"question {i}").model_dump(mode="json"),
            timestamp=now,
            deadline=now + timedelta(seconds=deadline_s),
            reply_to=keys.reply(str(cid)),
        )
        replies.append(message.reply_to or "")
        r.xadd(keys.inbox(AGENT), codec.encode(message, keys.inbox(AGENT)))
    return replies


def outcomes(r: Any, replies: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for stream in replies:
        entries = r.xrange(stream, count=1)
        if not entries:
            found["waiting"] += 1
            continue
        envelope = json.loads(entries[0][1][b"m"])
        payload = envelope["payload"]
        found["ok" if payload.get("ok") else envelope["message_type"]] += 1
    return found


def run(url: str, r: Any, tmp: Path, args: argparse.Namespace, limit: bool) -> dict[str, Any]:
    fake = openai_api.OpenAIFake().start()
    answer = openai_api.json_answer({"text": "ok"})
    fake.default = Reply(answer.status, answer.body, delay=args.latency_ms / 1000)
    prefix = f"rl{uuid.uuid4().hex[:6]}"
    config = write_config(tmp, prefix, fake.root_url + "/v1", args, limit)
    pipeline = Pipeline.load(config)
    workers = start_workers(args.workers, config, url)
    try:
        poll(lambda: len(r.keys(f"{prefix}:hb:*")) == args.workers, 120, "worker heartbeats")
        windows = args.requests / args.rpm + 2
        started = time.monotonic()
        replies = publish(r, pipeline, args.requests, deadline_s=windows * args.window + 120)
        poll(
            lambda: outcomes(r, replies)["waiting"] == 0,
            windows * args.window + 300,
            "every reply",
        )
        seconds = time.monotonic() - started
        arrivals = sorted(rec.at for rec in fake.requests)
        wall = time.time() - time.monotonic()
        minutes = Counter(int((at + wall) // args.window) for at in arrivals)
        return {
            "limit": args.rpm if limit else None,
            "seconds": round(seconds, 1),
            "outcomes": dict(outcomes(r, replies)),
            "server_requests": len(arrivals),
            "most_in_any_window": fake.most_in_window(args.window),
            "fixed_buckets": [minutes[k] for k in sorted(minutes)],
            "achieved_per_window": round(len(arrivals) / seconds * args.window, 1),
        }
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(30)
        fake.stop()


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}, load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--concurrency", type=int, default=16, help="handlers per worker")
    parser.add_argument("--rpm", type=int, default=60, help="requests per window (default 60)")
    parser.add_argument("--requests", type=int, default=150, help="requests sent at once")
    parser.add_argument("--latency-ms", type=float, default=200, help="fake API answer delay")
    parser.add_argument("--window", type=float, default=60.0, help="window seconds (default 60)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unlimited run")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}")
    with (
        tempfile.TemporaryDirectory() as folder,
        EmbeddedServer(Path(folder) / "redis", persistent=False) as server,
    ):
        r = redis.Redis.from_url(server.url)
        runs = [] if args.no_baseline else [("baseline (no limit)", False)]
        runs.append((f"limited ({args.rpm} per {args.window:g} s)", True))
        for name, limit in runs:
            result = run(server.url, r, Path(folder), args, limit)
            print(f"{name}: {json.dumps(result)}")
            if limit:
                ok = result["most_in_any_window"] <= args.rpm
                print(f"  most in any {args.window:g} s window <= {args.rpm}: {ok}")


if __name__ == "__main__":
    main()
