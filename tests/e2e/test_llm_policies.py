"""``calls.llm.*`` policies apply to real LLM calls: worker processes running an agent that
calls the Anthropic or OpenAI provider through the vendor's real SDK, pointed at a local fake
API server (tests/llmfakes) that counts the requests it gets. Shown per vendor:

* retries with the configured attempts;
* a circuit breaker shared by two worker processes: it opens after the configured failures,
  then the other process is refused without calling the server; after the reset timeout one
  probe goes through (a failed probe re-opens it) and a successful probe closes it;
* a call cut at its configured attempt timeout while the server hangs, counted as a failure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess, wait_until
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.llmfakes import anthropic_api, openai_api
from tests.llmfakes.server import FakeAPI, Reply

pytestmark = pytest.mark.e2e

WORKER = {
    "reclaim_idle": 5.0,
    "reclaim_interval": 0.2,
    "lease_interval": 0.5,
    "retry_backoff": 0.05,
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "max_deliveries": 20,
    "drain_timeout": 2,
    "batch_size": 1,
    "concurrency": 1,
}
# Seconds the hanging server would take to answer. The reply is awaited for half of it: the
# worker's first call imports the SDK and builds its first request (1-2 s idle, once seen
# past 14 s with four test processes on two cores), then the 1 s attempt timeout cuts it.
HANG = 60.0


class Vendor:
    """One vendor's fake API and its answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fake: FakeAPI
        if name == "anthropic":
            self.fake = anthropic_api.AnthropicFake()
            self.good = anthropic_api.tool_answer({"text": "ok"})
            self.down = anthropic_api.error(503, "overloaded_error", "down")
            self.base_url = self.fake.root_url
        else:
            self.fake = openai_api.OpenAIFake()
            self.good = openai_api.json_answer({"text": "ok"})
            self.down = openai_api.error(503, "server_error", "down")
            self.base_url = self.fake.root_url + "/v1"

    @property
    def calls(self) -> int:
        return len(self.fake.requests)


class Env:
    """An ``llm_caller`` agent type using ``vendor`` under the call policy ``call``."""

    def __init__(
        self, tmp: Path, url: str, prefix: str, env: dict[str, str], vendor: Vendor, call: Any
    ) -> None:
        self.tmp, self.url, self.vendor = tmp, url, vendor
        self.env = {**env, "ANTHROPIC_API_KEY": "sk-ant-test", "OPENAI_API_KEY": "sk-test"}
        self.state = tmp / "state"
        self.state.mkdir()
        self.policy = f"llm.{vendor.name}"
        llm = {"provider": vendor.name, "base_url": vendor.base_url, "cache_ttl": 0}
        config = {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": WORKER,
            "agents": {
                "caller": {
                    "class": "tests.fixtures.llm_caller:LLMCaller",
                    "config": {"state_dir": str(self.state), "llm": llm},
                    "policies": {"calls": {self.policy: call}},
                }
            },
        }
        path = tmp / "pipeline.yaml"
        path.write_text(yaml.safe_dump(config))
        self.config_path = path
        self.pipeline = Pipeline.load(path)
        self.keys = self.pipeline.config.keys
        self.codec = self.pipeline.codec()  # signed, as the workers verify
        self.r = redis.Redis.from_url(url)
        self.workers: list[WorkerProcess] = []

    def start(self, slot: str) -> WorkerProcess:
        proc = WorkerProcess(
            "caller",
            config=self.config_path,
            redis_url=self.url,
            slot=slot,
            env=self.env,
            log_path=self.tmp / f"caller-{slot}.log",
        ).start()
        self.workers.append(proc)
        return proc.wait_ready(self.r, self.keys)

    def publish(self, text: str) -> AgentMessage:
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="caller",
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=text).model_dump(mode="json"),
            timestamp=utcnow(),
            reply_to=self.keys.reply(str(cid)),
        )
        self.r.xadd(
            self.keys.inbox("caller"), self.codec.encode(message, self.keys.inbox("caller"))
        )
        return message

    def reply(self, message: AgentMessage) -> dict[str, Any] | None:
        assert message.reply_to is not None
        entries = self.r.xrange(message.reply_to)
        return json.loads(entries[0][1][b"m"])["payload"] if entries else None

    def breaker(self) -> dict[str, str]:
        fields = self.r.hgetall(self.keys.breaker(self.policy))
        return {k.decode(): v.decode() for k, v in fields.items()}

    def trips(self) -> int:
        return int(self.breaker().get("trips", 0))

    def refused_in(self) -> set[int]:
        """Pids of the worker processes the open breaker refused."""
        return {int(p.name.split("-")[1]) for p in self.state.glob("open-*")}

    def close(self) -> None:
        for proc in self.workers:
            proc.stop(15)
        self.r.close()


@pytest.fixture(params=["anthropic", "openai"])
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    chosen = Vendor(request.param)
    with chosen.fake.running():
        yield chosen


@pytest.fixture
def make_env(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str], vendor: Vendor
) -> Iterator[Any]:
    envs: list[Env] = []

    def make(call: dict[str, Any]) -> Env:
        env = Env(tmp_path, redis_url, prefix, subprocess_env, vendor, call)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


def test_llm_call_is_retried_with_the_configured_attempts(make_env: Any, vendor: Vendor) -> None:
    env = make_env({"retry": {"attempts": 4, "backoff": 0.05, "jitter": 0}})
    vendor.fake.script(vendor.down, vendor.down, vendor.down, vendor.good)
    env.start("0")
    message = env.publish("report")
    reply = wait_until(lambda: env.reply(message), 30, message="reply")
    assert reply["ok"] is True
    assert vendor.calls == 4  # three 503s retried in-process, the fourth attempt answered

    vendor.fake.script(*[vendor.down] * 4)  # the configured attempts, then the call fails
    failed = env.publish("report")
    reply = wait_until(lambda: env.reply(failed), 30, message="reply")
    assert reply["ok"] is False and "503" in reply["error"]
    assert vendor.calls == 4 + 4


def test_breaker_shared_by_two_workers_opens_and_half_opens(make_env: Any, vendor: Vendor) -> None:
    fail_max = 2
    env = make_env(
        {"retry": {"attempts": 1}, "breaker": {"fail_max": fail_max, "reset_timeout": 2}}
    )
    vendor.fake.default = vendor.down  # an outage
    workers = [env.start("0"), env.start("1")]
    messages = [env.publish(f"request {i}") for i in range(6)]

    wait_until(
        lambda: env.refused_in() == {w.pid for w in workers},
        30,
        message="both worker processes refused by the open breaker",
    )
    assert env.trips() == 1
    # opened after fail_max failures; each process handles one message at a time, so at most
    # one more call was already under way when it opened. Then nobody called the server.
    opened_after = vendor.calls
    assert fail_max <= opened_after <= fail_max + 1

    wait_until(lambda: env.trips() == 2, 30, message="the failed probe re-opened the breaker")
    assert vendor.calls == opened_after + 1  # one probe for the fleet, not one per process

    vendor.fake.default = vendor.good  # the outage ends: the next probe succeeds
    for message in messages:
        wait_until(lambda m=message: env.reply(m), 60, message="every request answered")
    assert all(env.reply(m)["ok"] for m in messages)  # type: ignore[index]
    assert env.breaker()["state"] == "closed"  # the successful probe closed it


def test_hanging_llm_call_is_cut_at_its_timeout_and_counted(make_env: Any, vendor: Vendor) -> None:
    env = make_env(
        {
            "retry": {"attempts": 1},
            "timeout": {"attempt": 1.0},
            "breaker": {"fail_max": 1, "reset_timeout": 60},
        }
    )
    vendor.fake.script(Reply(vendor.good.status, vendor.good.body, delay=HANG))
    env.start("0")
    message = env.publish("report")
    reply = wait_until(lambda: env.reply(message), HANG / 2, message="cut well before the hang")
    assert reply["ok"] is False and "cut by its timeout" in reply["error"]
    assert vendor.calls == 1
    assert env.breaker()["state"] == "open"  # the cut call counted as a failure (fail_max 1)
