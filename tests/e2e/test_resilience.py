"""Resilience policies with real worker processes on the embedded server: in-handler retries
with attempts recorded, timeouts that really stop the work, a circuit breaker shared by two
processes, delayed redelivery that blocks nothing, and timeout replies for expired requests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import WorkerProcess, wait_until
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.pipeline import LivePipeline, MakePipeline

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


class Env(LivePipeline):
    """The shared pipeline with one 'flaky' agent type, plus what this module observes: the
    agent's marker files, the breaker's state, replies as whole envelopes."""

    @property
    def state(self) -> Path:
        return Path(self.data["agents"]["flaky"]["config"]["state_dir"])

    @property
    def outage(self) -> Path:
        return Path(self.data["agents"]["flaky"]["config"]["outage_file"])

    def start(self, slot: str = "0") -> WorkerProcess:  # type: ignore[override]
        return super().start("flaky", slot)

    def publish(self, text: str, deadline_in: float | None = None) -> AgentMessage:  # type: ignore[override]
        """XADD a request straight to the inbox: no deadline unless ``deadline_in`` (which may
        be in the past), as no Client would send it."""
        return self.inject(self.message(text, to="flaky", deadline_in=deadline_in))

    def replies(self, message: AgentMessage) -> list[dict[str, Any]]:
        return self.reply_envelopes(message)

    def dead_letters(self, agent: str = "flaky") -> list[dict[bytes, bytes]]:
        return super().dead_letters(agent)

    def pending(self, agent: str = "flaky") -> list[dict[str, Any]]:
        return super().pending(agent)

    def markers(self, kind: str) -> list[str]:
        return sorted(p.name for p in self.state.glob(f"{kind}-*"))

    def breaker(self) -> dict[str, str]:
        fields = self.r.hgetall(self.keys.breaker("dep"))
        return {k.decode(): v.decode() for k, v in fields.items()}


@pytest.fixture
def make_env(make_pipeline: MakePipeline, tmp_path: Path) -> Callable[..., Env]:
    def make(dep: dict[str, Any] | None = None, worker: dict[str, Any] | None = None) -> Env:
        state = tmp_path / "state"
        state.mkdir()
        flaky = {
            "class": "tests.fixtures.flaky:Flaky",
            "config": {
                "state_dir": str(state),
                "outage_file": str(tmp_path / "outage"),
                "hang_seconds": 3.0,
            },
            "policies": {"retry": {"attempts": 1}, "calls": {"dep": dep or DEP}},
        }
        return make_pipeline({"flaky": flaky}, worker={**FAST, **(worker or {})}, cls=Env)

    return make


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
