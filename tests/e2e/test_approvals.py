"""Approvals only the safety checker can issue, each good for one task, once (issue 14), and
URLs the policy cannot read refused with a report: the six agents as real worker processes
under a Supervisor, on the session's server. Executions are counted in a tool ledger
(tests/fixtures/ledger.py: the python tool's word_count books every run)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal

from agent_runtime.approval import (
    LEGACY_KEY_ENV,
    PRIVATE_KEY_ENV,
    PUBLIC_KEY_ENV,
    generate_pair,
    pending_approvals,
    signer,
    submit_decision,
)
from agent_runtime.client import Client
from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.supervisor import Supervisor
from agents import approvals
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import PlanStep, Report, StepResult, Task
from tests.fixtures.approvals import key_pair, signed_task, with_id
from tests.fixtures.ledger import entries
from tests.fixtures.pipeline import LivePipeline, child_env, six_agents, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
WORKER = {"drain_timeout": 2, "heartbeat_interval": 0.5, "reclaim_interval": 1}
STRAY = "AGENT_RUNTIME_BACKUP_KEY"  # an unnamed runtime secret: nobody gets it


class Fleet:
    def __init__(self, pipe: LivePipeline, portal: BlockingPortal, sup: Supervisor) -> None:
        self.pipe, self.portal, self.sup = pipe, portal, sup
        self.sandbox = pipe.root / "sandbox"
        self.codec = pipe.pipeline.codec()

    def call(self, fn: Any) -> Any:
        async def run() -> Any:
            async with Client.connect(self.pipe.url, self.pipe.pipeline) as client:
                return await fn(client)

        return self.portal.call(run)

    def publish(self, text: str) -> AgentMessage:
        return self.call(lambda c: c.publish(text, timeout=60))  # type: ignore[no-any-return]

    def report(self, message: AgentMessage) -> Report:
        reply = self.call(lambda c: c.wait_reply(message, 60))
        assert isinstance(reply.payload, Report), reply.payload
        return reply.payload

    def ledger(self, cid: str | None = None) -> list[dict[str, str]]:
        return [e for e in entries(self.sandbox) if cid is None or e["correlation_id"] == cid]

    def tasks(self, cid: str) -> list[tuple[bytes, dict[bytes, bytes], AgentMessage]]:
        """The executor inbox entries of request ``cid``: (entry id, fields, envelope)."""
        found = []
        for stream in self.pipe.pipeline.routing.inboxes("executor"):
            for entry_id, fields in self.pipe.r.xrange(stream):
                message = self.codec.decode(fields, stream).message
                if str(message.correlation_id) == cid:
                    found.append((entry_id, fields, message))
        return found

    def answers(self, cause: uuid.UUID) -> list[StepResult]:
        """Every StepResult the executor wrote for message ``cause`` (router inbox)."""
        found = []
        for stream in self.pipe.pipeline.routing.inboxes("router"):
            for _id, fields in self.pipe.r.xrange(stream):
                decoded = self.codec.decode(fields, stream)
                if decoded.message.causation_id == cause:
                    assert isinstance(decoded.payload, StepResult)
                    found.append(decoded.payload)
        return found

    def results_for(self, causes: list[uuid.UUID]) -> list[StepResult]:
        """The executor's first StepResult for each of ``causes``."""
        return [
            wait_until(lambda c=c: self.answers(c), timeout=30, message="an answer")[0]  # type: ignore[misc]
            for c in causes
        ]


@pytest.fixture(scope="module")
def fleet(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("approvals")
    agents = six_agents(root, "127.0.0.1")
    agents["safety_checker"]["config"]["policy"]["approval_ttl"] = 120  # no test waits for it
    agents["executor"]["config"]["tools"]["python"] = {
        "class": "agents.executors.python:Python",
        "options": {
            "functions": {"word_count": "tests.fixtures.ledger:word_count"},
            "allowed_modules": ["tests.fixtures"],
        },
    }
    env = {**child_env(), STRAY: "not-for-workers-0123456789"}
    pipe = LivePipeline(
        root,
        redis_server.url,
        env,
        prefix="apr" + uuid.uuid4().hex[:8],
        agents=agents,
        worker=WORKER,
    )
    with supervised(pipe) as (portal, sup):
        yield Fleet(pipe, portal, sup)
    pipe.close()


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


# ------------------------------------------------------------------ who holds which key
def test_only_the_safety_checker_process_holds_the_private_key(fleet: Fleet) -> None:
    held: dict[str, set[str]] = {}
    for proc in fleet.sup.processes():
        assert proc.pid is not None
        env = environ(proc.pid)
        names = {n for n in (PRIVATE_KEY_ENV, PUBLIC_KEY_ENV, LEGACY_KEY_ENV, STRAY) if n in env}
        held.setdefault(proc.agent, set()).update(names)
        if PRIVATE_KEY_ENV in env:
            assert env[PRIVATE_KEY_ENV] == key_pair()[PRIVATE_KEY_ENV]
    assert held == {
        "intent_parser": set(),
        "planner": set(),
        "safety_checker": {PRIVATE_KEY_ENV},
        "router": set(),
        "executor": {PUBLIC_KEY_ENV},
        "reporter": set(),
    }


def test_an_approval_signed_with_another_key_is_refused(fleet: Fleet) -> None:
    """What a process without the safety checker's private key can make: refused, 0 runs."""
    cid = uuid.uuid4()
    step = PlanStep(id="s1", tool="python", args=count_args())
    task, message_id = signed_task(step, cid, signer_=signer(generate_pair()))
    message = with_id(fleet.pipe.message("x", to="executor"), message_id)
    injected = fleet.pipe.inject(envelope(message, cid, task))
    (result,) = fleet.results_for([injected.message_id])
    assert result.status == "refused" and "unknown key" in (result.error or "")
    assert fleet.ledger(str(cid)) == []


# ------------------------------------------------------------------ one approval, one task, once
def test_a_used_approval_is_refused_for_any_other_task(fleet: Fleet) -> None:
    message = fleet.publish("count words in data/notes.txt")
    cid = str(message.correlation_id)
    assert fleet.report(message).status == "succeeded"
    assert len(fleet.ledger(cid)) == 1
    [(_entry, fields, original)] = fleet.tasks(cid)
    task = Task.model_validate(original.payload)
    assert task.approval is not None and original.message_id == approvals.task_message_id(cid, "s1")

    def variant(**changes: Any) -> AgentMessage:
        data = {**task.model_dump(mode="json"), **changes.pop("task", {})}
        message_id = changes.pop("message_id", uuid.uuid4())
        return fleet.pipe.inject(
            with_id(envelope(original, uuid.UUID(cid), Task.model_validate(data)), message_id)
        )

    other_step = {**task.step.model_dump(mode="json"), "id": "s2"}
    other_args = {**task.step.model_dump(mode="json"), "args": count_args("data/other.txt")}
    sent = [
        variant(task={"idempotency_key": f"{cid}:s1:again"}),
        variant(),  # the same task under a new message id
        variant(task={"step": other_step}),
        variant(task={"step": other_args}),
    ]
    results = fleet.results_for([m.message_id for m in sent])
    assert [r.status for r in results] == ["refused"] * 4
    assert [r.error for r in results] == [
        "refused: the approval is for another idempotency key",
        "refused: the approval is for another task message",
        "refused: the approval is for another step",
        "refused: the approval is for other arguments",
    ]
    # the exact bytes again, once the de-duplication marks are gone: the approval's use record
    for key in fleet.pipe.r.scan_iter(match=f"{fleet.pipe.keys.prefix}:done:executor:*"):
        fleet.pipe.r.delete(key)
    fleet.pipe.r.xadd(fleet.pipe.keys.inbox("executor"), fields)
    refused = wait_until(
        lambda: [r for r in fleet.answers(original.message_id) if r.status == "refused"],
        timeout=30,
        message="the replay's answer",
    )
    assert "the approval was already used" in (refused[0].error or "")
    assert len(fleet.ledger(cid)) == 1


# ------------------------------------------------------------------ human approvals
def test_tampered_pending_args_are_not_signed(fleet: Fleet) -> None:
    message = fleet.publish("deploy web to prod version 7")
    cid = str(message.correlation_id)
    wait_until(
        lambda: fleet.call(lambda c: pending_approvals(c.state, c.keys, cid)),
        timeout=20,
        message="the pending approval",
    )
    key = fleet.pipe.keys.request_state(cid, "approval")
    record = json.loads(fleet.pipe.r.hget(key, "s1"))
    record["step"]["args"]["service"] = "evil"  # the seal stays: it no longer matches
    fleet.pipe.r.hset(key, "s1", json.dumps(record))
    fleet.call(lambda c: submit_decision(c, cid, approved=True, steps=["s1"], approver="ann"))
    report = fleet.report(message)
    assert report.status == "rejected"
    assert any("not signed" in r and "altered" in r for r in report.reasons), report.reasons
    assert not list((fleet.pipe.root / "deploys").glob("*.json"))
    assert fleet.tasks(cid) == []


# ------------------------------------------------------------------ one URL parser
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080\\@example.com/", "backslash"),
        ("http://127.0.0.1:99999/", "out of range"),
        ("http://user:secret@127.0.0.1/", "credentials"),
    ],
)
def test_a_url_the_policy_cannot_read_is_refused_with_a_report(
    fleet: Fleet, url: str, reason: str
) -> None:
    message = fleet.publish(f"fetch {url}")
    report = fleet.report(message)
    assert report.status == "rejected"
    assert any("url refused" in r and reason in r for r in report.reasons), report.reasons
    assert fleet.tasks(str(message.correlation_id)) == []


# ------------------------------------------------------------------ helpers
def count_args(path: str = "data/notes.txt") -> dict[str, Any]:
    return {"function": "word_count", "kwargs": {"path": path}}


def envelope(base: AgentMessage, cid: uuid.UUID, task: Task) -> AgentMessage:
    """``task`` to the executor in request ``cid``, keeping ``base``'s message id."""
    return AgentMessage(
        **{
            **base.model_dump(),
            "correlation_id": cid,
            "to_agent": "executor",
            "from_agent": "router",
            "message_type": Task.message_type,
            "schema_version": Task.schema_version,
            "payload": task.model_dump(mode="json"),
            "timestamp": utcnow(),
            "reply_to": None,
        }
    )
