"""Resilience policies with real worker processes on the embedded server: in-handler retries
with attempts recorded, timeouts that really stop the work, a circuit breaker shared by two
processes, delayed redelivery that blocks nothing, and timeout replies for expired requests."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess, wait_until
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow

pytestmark = pytest.mark.e2e

FAST = {
    "reclaim_idle": 5.0,
    "reclaim_interval": 0.2,
    "lease_interval": 0.5,
    "retry_backoff": 0.05,
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "max_deliveries": 4,
    "drain_timeout": 2,
    "batch_size": 1,
    "concurrency": 2,
}
DEP = {
    "retry": {"attempts": 3, "backoff": 0.05, "jitter": 0.01},
    "breaker": {"fail_max": 5, "reset_timeout": 2},
}


class Env:
    """One 'flaky' agent type under a fresh prefix, and helpers to drive and observe it."""

    def __init__(
        self,
        tmp: Path,
        url: str,
        prefix: str,
        env: dict[str, str],
        dep: dict[str, Any],
        worker: dict[str, Any],
    ) -> None:
        self.tmp, self.url, self.env = tmp, url, env
        self.state = tmp / "state"
        self.state.mkdir()
        self.outage = tmp / "outage"
        config = {
            "key_prefix": prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": {**FAST, **worker},
            "agents": {
                "flaky": {
                    "class": "tests.fixtures.flaky:Flaky",
                    "config": {
                        "state_dir": str(self.state),
                        "outage_file": str(self.outage),
                        "hang_seconds": 3.0,
                    },
                    "policies": {"retry": {"attempts": 1}, "calls": {"dep": dep}},
                }
            },
        }
        self.config_path = tmp / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.pipeline = Pipeline.load(self.config_path)
        self.keys = self.pipeline.config.keys
        self.codec = Codec(self.pipeline.schemas)
        self.r = redis.Redis.from_url(url)
        self.workers: list[WorkerProcess] = []

    def start(self, slot: str = "0") -> WorkerProcess:
        log = self.tmp / f"flaky-{slot}.log"
        proc = WorkerProcess(
            "flaky",
            config=self.config_path,
            redis_url=self.url,
            slot=slot,
            env=self.env,
            log_path=log,
        ).start()
        self.workers.append(proc)
        return proc.wait_ready(self.r, self.keys)

    def publish(self, text: str, deadline_in: float | None = None) -> AgentMessage:
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="flaky",
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=text).model_dump(mode="json"),
            timestamp=utcnow(),
            deadline=None if deadline_in is None else utcnow() + timedelta(seconds=deadline_in),
            reply_to=self.keys.reply(str(cid)),
        )
        self.r.xadd(self.keys.inbox("flaky"), self.codec.encode(message))
        return message

    def replies(self, message: AgentMessage) -> list[dict[str, Any]]:
        assert message.reply_to is not None
        return [json.loads(f[b"m"]) for _id, f in self.r.xrange(message.reply_to)]

    def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [fields for _id, fields in self.r.xrange(self.keys.dlq("flaky"))]

    def pending(self) -> list[dict[str, Any]]:
        return self.r.xpending_range(self.keys.inbox("flaky"), "flaky", "-", "+", 100)

    def markers(self, kind: str) -> list[str]:
        return sorted(p.name for p in self.state.glob(f"{kind}-*"))

    def breaker(self) -> dict[str, str]:
        fields = self.r.hgetall(self.keys.breaker("dep"))
        return {k.decode(): v.decode() for k, v in fields.items()}

    def close(self) -> None:
        for proc in self.workers:
            proc.stop(15)
        self.r.close()


@pytest.fixture
def make_env(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str]
) -> Iterator[Any]:
    envs: list[Env] = []

    def make(dep: dict[str, Any] | None = None, worker: dict[str, Any] | None = None) -> Env:
        env = Env(tmp_path, redis_url, prefix, subprocess_env, dep or DEP, worker or {})
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


def test_dependency_failing_twice_is_retried_and_attempts_are_recorded(make_env: Any) -> None:
    env = make_env()
    env.start()
    message = env.publish("fail:2")
    wait_until(lambda: env.replies(message), 20, message="reply")
    [reply] = env.replies(message)
    assert reply["message_type"] == "test.flaky_result"
    assert reply["payload"]["attempts"] == 3
    assert env.dead_letters() == []
    assert env.breaker().get("failures", "0") == "0"  # the success reset the count


def test_hanging_dependency_is_cut_at_its_timeout_and_stops_for_real(make_env: Any) -> None:
    dep = {"retry": {"attempts": 2, "backoff": 0.05, "jitter": 0}, "timeout": {"attempt": 1.0}}
    env = make_env(dep=dep, worker={"max_deliveries": 2})
    env.start()
    message = env.publish("hang")
    wait_until(lambda: env.dead_letters(), 30, message="dead letter after the delivery cap")
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"max_deliveries" and b"TimeoutError" in dead[b"error"]
    started = env.markers("started")
    assert 0 < len(started) <= 4  # 2 deliveries x 2 attempts, each cut at 1 s
    pids = [int((env.state / name).read_text()) for name in started]
    wait_until(lambda: not any(_alive(pid) for pid in pids), 5, message="children gone")
    # every child was killed before its 3 s sleep ended, so none can write its late file
    assert env.markers("late") == []
    # no late success: the requester is told once that the request failed
    [reply] = env.replies(message)
    assert reply["message_type"] == "request.failed"
    assert reply["payload"]["code"] == "max_deliveries"
    assert reply["payload"]["dead_letter_id"] == dead[b"dead_letter_id"].decode()


def test_breaker_is_shared_by_workers_and_an_outage_burns_no_message(make_env: Any) -> None:
    dep = {"retry": {"attempts": 1}, "breaker": {"fail_max": 3, "reset_timeout": 2}}
    env = make_env(dep=dep)
    env.outage.touch()
    workers = [env.start("0"), env.start("1")]
    messages = [env.publish(f"request {i}") for i in range(8)]

    def observers() -> set[str]:
        return {name.split("-")[1] for name in env.markers("open")}

    wait_until(
        lambda: observers() == {str(w.pid) for w in workers},
        20,
        message="both worker processes refused by the open breaker",
    )
    assert env.breaker()["state"] in {"open", "half-open"}
    env.outage.unlink()  # the outage ends (well inside the retry horizon)

    for message in messages:
        wait_until(lambda m=message: env.replies(m), 30, message="every request answered")
    replies = [env.replies(m)[0]["payload"] for m in messages]
    assert sum(r["probe"] for r in replies) == 1  # one half-open probe closed it
    assert env.breaker()["state"] == "closed"
    assert env.dead_letters() == []
    wait_until(lambda: not env.pending(), 10, message="all acknowledged")
    assert len(env.markers("call")) < 8 + 4 + 3  # the open breaker stopped the calls


def test_delayed_redelivery_does_not_block_the_workers_other_messages(make_env: Any) -> None:
    env = make_env()
    env.start()
    delayed = env.publish("retry:60")
    wait_until(lambda: env.markers("retry"), 10, message="first delivery asked for a delay")
    quick = env.publish("fail:0")
    wait_until(lambda: env.replies(quick), 10, message="reply while the other one waits")
    assert env.replies(delayed) == []
    assert [p["message_id"] for p in env.pending()] != []  # still held, not acked or lost
    assert len(env.markers("retry")) == 1


def test_request_expiring_in_a_slow_handler_gets_a_timeout_reply(make_env: Any) -> None:
    env = make_env(dep={"retry": {"attempts": 1}})
    env.start()
    message = env.publish("hang", deadline_in=1.5)
    assert message.deadline is not None
    limit = (message.deadline - utcnow()).total_seconds() + 2
    wait_until(lambda: env.replies(message), limit, message="timeout reply by deadline + 2 s")
    [reply] = env.replies(message)
    assert reply["message_type"] == "request.failed"
    assert reply["payload"]["status"] == "timeout" and reply["payload"]["agent"] == "flaky"
    wait_until(lambda: env.dead_letters(), 5, message="dead letter")
    assert env.dead_letters()[0][b"reason"] == b"expired"


def test_request_expired_before_receipt_gets_a_timeout_reply(make_env: Any) -> None:
    env = make_env()
    env.start()
    message = env.publish("fail:0", deadline_in=-1)
    started = time.monotonic()
    wait_until(lambda: env.replies(message), 2, message="timeout reply within 2 s")
    assert time.monotonic() - started <= 2
    [reply] = env.replies(message)
    assert reply["payload"]["status"] == "timeout"
    assert reply["payload"]["stage"] == "user.request"
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"expired"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
