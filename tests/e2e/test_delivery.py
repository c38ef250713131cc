"""Delivery guarantees with real worker processes on the embedded server: crash recovery,
live leases, poison messages, bad input, de-duplication, graceful drain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.codec import Codec
from agent_runtime.testing import wait_until
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.pipeline import LivePipeline, MakePipeline, echo_sink

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "agent_runtime"]

FAST = {
    "reclaim_idle": 1.0,
    "reclaim_interval": 0.2,
    "lease_interval": 0.25,
    "retry_backoff": 0.05,
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "max_deliveries": 3,
    "drain_timeout": 10,
}


class Env(LivePipeline):
    """The shared echo -> sink pipeline, plus which worker processes ran a message's handler
    (the Echo agent touches a marker file per call)."""

    @property
    def markers(self) -> Path:
        return Path(self.data["agents"]["echo"]["config"]["marker_dir"])

    def sink_inputs(self) -> list[dict[str, Any]]:
        return self.inbox("sink")

    def handler_calls(self, message: AgentMessage) -> list[str]:
        return sorted(p.name.split("-")[0] for p in self.markers.glob(f"*-{message.message_id}"))


@pytest.fixture
def make_env(make_pipeline: MakePipeline, tmp_path: Path) -> Callable[..., Env]:
    def make(echo: dict[str, Any] | None = None, worker: dict[str, Any] | None = None) -> Env:
        markers = tmp_path / "markers"
        markers.mkdir(exist_ok=True)
        agents = echo_sink({"marker_dir": str(markers), **(echo or {})})
        return make_pipeline(agents, worker={**FAST, **(worker or {})}, cls=Env)

    return make


def test_sigkilled_worker_message_is_reclaimed_and_handled_once(make_env: Any) -> None:
    env = make_env(echo={"hang_first_delivery": True})
    env.start("sink")
    doomed = env.start("echo", "0")
    message = env.message("crash me")
    env.publish(message)
    wait_until(lambda: env.handler_calls(message), message="first delivery handled")
    doomed.kill()
    survivor = env.start("echo", "1")

    wait_until(lambda: env.replies(message), 20, message="reply after reclaim")
    assert env.replies(message) == [{"text": "CRASH ME"}]
    outputs = env.sink_inputs()
    assert len(outputs) == 1
    assert outputs[0]["payload"]["worker_pid"] == survivor.pid
    assert outputs[0]["payload"]["delivery_count"] == 2
    wait_until(lambda: not env.pending(), message="input acknowledged")


def test_slow_handler_is_not_stolen_while_alive(make_env: Any) -> None:
    # The handler runs 3x longer than reclaim_idle; lease renewal keeps it with its worker.
    env = make_env(echo={"sleep_seconds": 3.0})
    env.start("sink")
    first = env.start("echo", "0")
    message = env.message("slow")
    env.publish(message)
    wait_until(lambda: env.handler_calls(message), message="handler started")
    env.start("echo", "1")  # an idle competitor that reclaims every 0.2 s

    wait_until(lambda: env.replies(message), 20, message="reply")
    assert env.handler_calls(message) == [str(first.pid)]
    [output] = env.sink_inputs()
    assert output["payload"]["delivery_count"] == 1
    assert env.replies(message) == [{"text": "SLOW"}]


def test_poison_message_is_dead_lettered_after_max_deliveries(make_env: Any) -> None:
    env = make_env(echo={"fail_when_text_contains": "poison"})
    env.start("sink")
    worker = env.start("echo")
    poison = env.message("poison pill")
    good = [env.message(f"good {i}") for i in range(5)]
    env.publish(poison)
    for message in good:
        env.publish(message)

    wait_until(lambda: env.dead_letters(), 20, message="dead letter")
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"max_deliveries"
    assert b"poison pill" in dead[b"error"]
    assert dead[b"delivery_count"] == b"3"
    assert json.loads(dead[b"orig.m"])["message_id"] == str(poison.message_id)
    assert len(env.handler_calls(poison)) == 3
    for message in good:
        wait_until(lambda m=message: env.replies(m), message="good traffic continues")
    assert worker.alive()
    wait_until(lambda: not env.pending(), message="poison entry acknowledged")


def test_bad_input_is_dead_lettered_on_first_delivery(make_env: Any) -> None:
    env = make_env(worker={"max_message_bytes": 4096})
    env.start("sink")
    worker = env.start("echo")
    inbox = env.keys.inbox("echo")
    good_fields = env.codec.encode(env.message("fine"), inbox)
    wrong_schema = env.message("x").model_dump(mode="json")
    wrong_schema["payload"] = {"txt": "missing text field"}
    future = env.message("x").model_dump(mode="json")
    future["schema_version"] = 7
    bad = {
        "undecodable": {b"m": b"\xff\xfe\x00garbage{"},
        "oversize": {b"m": b"{" + b"x" * 5000},
        "invalid": {b"m": json.dumps(wrong_schema).encode()},
        "unknown_version": {b"m": json.dumps(future).encode()},
        "no_field": {b"zzz": b"1"},
    }
    for fields in bad.values():  # signed: the checks after the signature are under test
        env.r.xadd(inbox, env.codec.sign_fields(fields, inbox) if b"m" in fields else fields)
    good = env.message("still works")
    env.publish(good)

    wait_until(lambda: len(env.dead_letters()) == len(bad), message="all bad entries dead")
    reasons = sorted(d[b"reason"].decode() for d in env.dead_letters())
    assert reasons == sorted(
        ["undecodable", "oversize", "invalid", "unknown_version", "undecodable"]
    )
    assert all(d[b"delivery_count"] == b"1" for d in env.dead_letters())
    by_reason = {d[b"reason"]: d for d in env.dead_letters()}
    assert b"payload of user.request" in by_reason[b"invalid"][b"error"]
    assert b"v7 is not readable" in by_reason[b"unknown_version"][b"error"]
    wait_until(lambda: env.replies(good), message="good message after garbage")
    assert worker.alive()
    assert good_fields  # the codec accepts what it produces


def test_forged_signature_is_dead_lettered(make_env: Any) -> None:
    """A key from the environment: every worker and client of the fleet signs with it; an
    entry signed with another key, or not at all, is refused."""
    env = make_env()
    worker = env.start("echo", AGENT_RUNTIME_SIGNING_KEY="fleet-secret-of-16+")
    signed = Codec(env.pipeline.schemas, signing_key=b"fleet-secret-of-16+")
    forged = Codec(env.pipeline.schemas, signing_key=b"attacker-key-of-16+")
    unsigned = Codec(env.pipeline.schemas)
    inbox = env.keys.inbox("echo")
    good = env.message("signed")
    env.r.xadd(inbox, forged.encode(env.message("forged"), inbox))
    env.r.xadd(inbox, unsigned.encode(env.message("unsigned"), inbox))
    env.r.xadd(inbox, signed.encode(good, inbox))

    wait_until(lambda: len(env.dead_letters()) == 2, message="forged and unsigned dead")
    assert {d[b"reason"] for d in env.dead_letters()} == {b"bad_signature"}
    wait_until(lambda: env.handler_calls(good), message="signed message handled")
    assert worker.alive()


def test_redelivered_and_duplicated_messages_produce_no_duplicate_output(make_env: Any) -> None:
    env = make_env()
    env.start("sink")
    env.start("echo")
    message = env.message("once")
    env.publish(message)
    env.publish(message)  # a client retry that wrote the entry twice
    wait_until(lambda: env.replies(message), message="reply")
    wait_until(lambda: not env.pending() and not env.pending("sink"), message="all acked")

    # A crash after the outputs were written but before the done marker: the input comes
    # back, the handler runs again, the same output id reaches the sink, which drops it.
    _forget_done(env, "echo", str(message.message_id))
    env.publish(message)
    wait_until(lambda: len(env.sink_inputs()) == 2, message="re-emitted output")
    wait_until(lambda: not env.pending("sink"), message="sink acked the copy")

    ids = {m["message_id"] for m in env.sink_inputs()}
    assert len(ids) == 1  # deterministic output id
    assert env.replies(message) == [{"text": "ONCE"}]
    assert len(env.handler_calls(message)) == 2


@pytest.mark.parametrize("drain_timeout", [10.0, 0.05])
def test_sigterm_loses_nothing(make_env: Any, drain_timeout: float) -> None:
    # Long drain: in-flight work finishes. Short drain: it is cut and handed back.
    env = make_env(
        echo={"sleep_seconds": 0.3},
        worker={
            "concurrency": 4,
            "drain_timeout": drain_timeout,
            "reclaim_idle": 30.0,
            "lease_interval": 1.0,
        },
    )
    env.start("sink")
    first = env.start("echo", "0")
    messages = [env.message(f"m{i}") for i in range(12)]
    for message in messages:
        env.publish(message)
    wait_until(lambda: env.pending(), message="work in flight")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    env.start("echo", "1")

    for message in messages:
        wait_until(lambda m=message: env.replies(m), 30, message="every reply")
    for message in messages:
        assert len(env.replies(message)) == 1
    assert not env.dead_letters()


def test_expired_message_is_dead_lettered(make_env: Any) -> None:
    env = make_env()
    env.start("echo")
    message = env.message("late", deadline=utcnow() - timedelta(seconds=1))
    env.publish(message)
    wait_until(lambda: env.dead_letters(), message="dead letter")
    assert env.dead_letters()[0][b"reason"] == b"expired"


def _forget_done(env: Env, agent: str, message_id: str) -> None:
    """What a crash between 'outputs written' and 'done marked' leaves behind."""
    for key in env.r.scan_iter(env.keys.done(agent, 0).rsplit(":", 1)[0] + ":*"):
        env.r.srem(key, message_id)


def test_handler_timeout_cancels_and_counts_as_failure(make_env: Any) -> None:
    env = make_env(
        echo={"sleep_seconds": 30.0}, worker={"handler_timeout": 0.5, "max_deliveries": 2}
    )
    worker = env.start("echo")
    message = env.message("hangs")
    env.publish(message)
    wait_until(lambda: env.dead_letters(), 20, message="timed-out message dead-lettered")
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"max_deliveries"
    assert b"timed out after 0.5s" in dead[b"error"]
    assert len(env.handler_calls(message)) == 2
    assert worker.alive()


def test_lost_consumer_group_is_recreated(make_env: Any) -> None:
    # What a server restart without persistence (or a deleted stream) does to a live worker.
    env = make_env()
    worker = env.start("echo")
    env.r.delete(env.keys.inbox("echo"))  # the stream and its consumer group are gone
    message = env.message("after the group was lost")
    env.publish(message)
    wait_until(lambda: env.handler_calls(message), 20, message="handled after NOGROUP")
    assert worker.alive()


def test_rejected_request_is_answered_at_once_with_its_reason(make_env: Any) -> None:
    """A handler that raises Reject: dead-lettered on the first delivery, and the requester's
    ``send --wait`` returns request.failed with the reason long before the deadline."""
    env = make_env(echo={"reject_when_text_contains": "forbidden"})
    env.start("sink")
    env.start("echo")
    done = subprocess.run(
        [
            *CLI,
            *("send", "forbidden thing", "--wait", "--json", "--timeout", "120"),
            *("--config", str(env.config_path), "--redis-url", env.url),
        ],
        capture_output=True,
        text=True,
        env=env.env,
        timeout=60,  # far shorter than the request's 120 s deadline
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    reply = json.loads(done.stdout[done.stdout.index("{") :])
    assert reply["message_type"] == "request.failed"
    failed = reply["payload"]
    assert (failed["status"], failed["code"], failed["agent"]) == (
        "rejected",
        "policy_denied",
        "echo",
    )
    assert "refused by policy: forbidden thing" in failed["reason"]
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"policy_denied" and dead[b"delivery_count"] == b"1"
    assert failed["dead_letter_id"] == dead[b"dead_letter_id"].decode()


def test_permanent_error_is_dead_lettered_on_the_first_delivery(make_env: Any) -> None:
    env = make_env(echo={"invalid_when_text_contains": "bad port"})
    env.start("sink")
    env.start("echo")
    message = env.message("bad port 99999")
    env.publish(message)
    wait_until(lambda: env.replies(message), 20, message="request.failed")
    [failed] = env.replies(message)
    assert (failed["status"], failed["code"]) == ("failed", "permanent_error")
    assert "Port out of range" in failed["reason"]
    assert len(env.handler_calls(message)) == 1  # never retried
    [dead] = env.dead_letters()
    assert dead[b"reason"] == b"permanent_error"


def test_permanent_commit_error_dead_letters_that_message_and_the_batch_commits(
    make_env: Any,
) -> None:
    """One message's reply stream is a key of another type (WRONGTYPE on its write): that
    message alone is dead-lettered; the others read in the same batch are delivered."""
    env = make_env()
    env.start("echo")
    messages = [env.message(f"request {i}") for i in range(8)]
    broken = messages[3]
    assert broken.reply_to is not None
    env.r.set(broken.reply_to, "not a stream")
    for message in messages:
        env.publish(message)
    wait_until(lambda: env.r.xlen(env.keys.inbox("sink")) == 8, 20, message="echo handled all")
    sink = env.start("sink")  # reads the eight in one batch

    for message in messages:
        if message is not broken:
            wait_until(lambda m=message: env.replies(m), 20, message="the rest delivered")
    wait_until(lambda: env.dead_letters("sink"), 20, message="the broken one dead-lettered")
    [dead] = env.dead_letters("sink")
    assert dead[b"reason"] == b"unwritable_output" and b"WRONGTYPE" in dead[b"error"]
    assert json.loads(dead[b"orig.m"])["causation_id"] == str(broken.message_id)
    assert env.r.get(broken.reply_to) == b"not a stream"
    wait_until(lambda: not env.pending("sink"), message="all acknowledged")
    assert sink.alive()
