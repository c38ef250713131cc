"""Fleet rate limits with real processes: three worker processes of an agent type that makes
one OpenAI call per request (the official SDK), against the local fake OpenAI server
(tests/llmfakes), share the account's limit in Redis (``llm.accounts``).

The window is shortened to a few seconds (``window_seconds``; production keeps 60) and the
fake server counts its own arrivals per any window of that length: the count never exceeds
the configured requests per window, and every request still succeeds within its deadline. A
request whose place would come after its deadline ends at once with a ``timeout`` reply
instead of waiting or calling the provider.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess, wait_until
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.pipeline import MakePipeline, echo_sink
from tests.llmfakes import openai_api

pytestmark = pytest.mark.e2e

WORKER = {
    "reclaim_idle": 30.0,
    "reclaim_interval": 0.5,
    "lease_interval": 0.5,
    "retry_backoff": 0.05,
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "drain_timeout": 2,
    "batch_size": 4,
    "concurrency": 4,
}
ACCOUNT = "openai-test"


class Fleet:
    """N ``caller`` workers sharing one OpenAI account limited to ``rpm`` per ``window``."""

    def __init__(
        self, tmp: Path, url: str, prefix: str, env: dict[str, str], rpm: int, window: float
    ) -> None:
        self.fake = openai_api.OpenAIFake().start()
        self.fake.default = openai_api.json_answer({"text": "ok"})
        self.tmp, self.url = tmp, url
        self.env = {**env, "OPENAI_API_KEY": "sk-test"}
        (tmp / "state").mkdir()
        llm = {
            "provider": "openai",
            "base_url": self.fake.root_url + "/v1",
            "cache_ttl": 0,
            "account": ACCOUNT,
        }
        config = {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": WORKER,
            "llm": {
                "accounts": {
                    ACCOUNT: {
                        "provider": "openai",
                        "requests_per_minute": rpm,
                        "window_seconds": window,
                    }
                }
            },
            "agents": {
                "caller": {
                    "class": "tests.fixtures.llm_caller:LLMCaller",
                    "config": {"state_dir": str(tmp / "state"), "llm": llm},
                    "policies": {"calls": {"llm.openai": {"retry": {"attempts": 1}}}},
                }
            },
        }
        self.config_path = tmp / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        pipeline = Pipeline.load(self.config_path)
        self.keys = pipeline.config.keys
        self.codec = pipeline.codec()  # signed, as the workers' own
        self.r = redis.Redis.from_url(url)
        self.workers: list[WorkerProcess] = []

    def start(self, slot: str, **env: str) -> WorkerProcess:
        proc = WorkerProcess(
            "caller",
            config=self.config_path,
            redis_url=self.url,
            slot=slot,
            env={**self.env, **env},
            log_path=self.tmp / f"caller-{slot}.log",
        ).start()
        self.workers.append(proc)
        return proc.wait_ready(self.r, self.keys, timeout=60)

    def publish(self, text: str, deadline: float) -> AgentMessage:
        cid = uuid.uuid4()
        now = utcnow()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="caller",
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=text).model_dump(mode="json"),
            timestamp=now,
            deadline=now + timedelta(seconds=deadline),
            reply_to=self.keys.reply(str(cid)),
        )
        inbox = self.keys.inbox("caller")
        self.r.xadd(inbox, self.codec.encode(message, inbox))
        return message

    def reply(self, message: AgentMessage) -> dict[str, Any] | None:
        assert message.reply_to is not None
        entries = self.r.xrange(message.reply_to)
        if not entries:
            return None
        decoded = self.codec.decode(entries[0][1], message.reply_to)  # verified for its stream
        return {"type": decoded.message.message_type, **decoded.message.payload}

    def status(self) -> dict[str, Any]:
        """``agent-runtime status --json``'s row of the account (a real CLI process)."""
        argv = ["status", "--json", "--config", str(self.config_path), "--redis-url", self.url]
        done = subprocess.run(
            [sys.executable, "-m", "agent_runtime", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            check=True,
        )
        (row,) = json.loads(done.stdout)["rate_limits"]
        assert row["limit"] == ACCOUNT
        return dict(row)

    def close(self) -> None:
        for proc in self.workers:
            proc.stop(15)
        self.r.close()
        self.fake.stop()


@pytest.fixture
def make_fleet(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str]
) -> Iterator[Any]:
    made: list[Fleet] = []

    def make(rpm: int, window: float) -> Fleet:
        fleet = Fleet(tmp_path, redis_url, prefix, subprocess_env, rpm, window)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def test_three_workers_never_exceed_the_accounts_rate_and_every_request_succeeds(
    make_fleet: Any,
) -> None:
    rpm, window, requests = 3, 2.0, 12
    fleet = make_fleet(rpm, window)
    ports = [_free_port() for _ in range(3)]
    for slot, port in enumerate(ports):
        fleet.start(str(slot), AGENT_RUNTIME_METRICS_PORT=str(port))
    messages = [fleet.publish(f"question {i}", deadline=120) for i in range(requests)]

    replies = [
        wait_until(lambda m=m: fleet.reply(m), 120, message="every request answered")
        for m in messages
    ]
    assert all(r["type"] == "test.llm_call_result" and r["ok"] for r in replies), replies
    assert len(fleet.fake.requests) == requests  # each request called once: no 429, no retry
    assert fleet.fake.most_in_window(window) <= rpm
    assert len({r["worker_pid"] for r in replies}) >= 2  # the limit was shared, not local

    # on /metrics: every admission observed, and the calls that had to wait counted
    admitted = sum(_sample(p, "agent_runtime_rate_limit_wait_seconds_count") for p in ports)
    waited = sum(_sample(p, "agent_runtime_rate_limit_waits_total") for p in ports)
    assert admitted == requests
    assert waited >= requests - rpm  # all were sent at once: at most rpm went straight in

    status = fleet.status()  # the fleet's view: the same waits, the limit and what it holds
    assert status["waited"] == waited
    assert status["meters"]["requests"]["limit"] == rpm
    assert status["meters"]["requests"]["used"] <= rpm
    assert status["refused_deadline"] == 0


def test_a_request_whose_place_comes_after_its_deadline_ends_with_timeout_at_once(
    make_fleet: Any,
) -> None:
    fleet = make_fleet(1, 600.0)  # one call per ten minutes
    fleet.start("0")
    first = fleet.publish("first", deadline=120)
    assert wait_until(lambda: fleet.reply(first), 60, message="first answered")["ok"]

    late = fleet.publish("second", deadline=60)  # its place frees in ~600 s
    reply = wait_until(lambda: fleet.reply(late), 45, message="refused well before 60 s")
    assert reply["type"] == "request.failed"
    assert reply["status"] == "timeout"
    assert "rate limit" in reply["reason"]
    assert len(fleet.fake.requests) == 1  # the refused request never reached the provider
    status = fleet.status()
    assert status["refused_deadline"] == 1 and status["waited"] == 0
    assert status["meters"]["requests"] == {"used": 1, "calls": 1, "limit": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sample(port: int, name: str) -> float:
    """The sample ``name`` of the test's account on the worker's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == {"limit": ACCOUNT}:
                return float(s.value)
    return 0.0


def test_an_agent_types_messages_per_second_hold_across_its_workers(
    make_pipeline: MakePipeline, tmp_path: Path
) -> None:
    """``rate_limit: {messages_per_second: 3}`` on the echo type, two echo processes: the
    handlings they start (each leaves a marker file, its mtime the start) never number more
    than 3 in any second, and every request is answered."""
    markers = tmp_path / "markers"
    markers.mkdir()
    agents = echo_sink(echo={"marker_dir": str(markers)})
    agents["echo"]["rate_limit"] = {"messages_per_second": 3}
    p = make_pipeline(agents, worker={"concurrency": 8, "batch_size": 8})
    p.start("sink")
    p.start("echo", "0")
    p.start("echo", "1")
    messages = [p.publish(f"hello {i}") for i in range(10)]
    for message in messages:
        wait_until(lambda m=message: p.replies(m), 60, message="every request answered")
    starts = sorted(f.stat().st_mtime_ns / 1e9 for f in markers.iterdir())
    assert len(starts) == 10
    # The limiter admits at most 3 per second on the server's clock; a marker's mtime is taken
    # after admission, in another process, at the filesystem's granularity (4 ms here), so two
    # admissions just over 1 s apart can leave markers just under 1 s apart (seen: exactly
    # 1.000 s). Judged over 0.9 s, an unlimited echo (10 starts within ~0.1 s) still fails.
    for i, start in enumerate(starts):
        assert len([t for t in starts[i:] if t - start < 0.9]) <= 3, starts
    status = p.cli_json("status", "--json")
    (row,) = [r for r in status["rate_limits"] if r["limit"] == "agent.echo"]
    assert row["meters"]["messages"]["limit"] == 3
    assert row["waited"] >= 10 - 3
