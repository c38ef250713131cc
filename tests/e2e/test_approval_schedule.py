"""Approvals and cancel with real worker processes (Supervisor) on the session's server:
the approval timer lives in the router's schedule, not in its group's pending list;
``approvals --json`` lists what waits for a human; ``cancel`` ends a request ``cancelled``
with no tool run (the ledger tool records every call) and is refused, with one line, for a
finished or unknown request."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.cli import main
from agent_runtime.cli.failures import EXIT_NOT_OK, EXIT_OK
from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.delivery import expand_trace
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import PlanStep
from tests.fixtures.approvals import signed_task as approved_task
from tests.fixtures.ledger_tool import calls
from tests.fixtures.pipeline import LivePipeline, child_env, six_agents, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
WORKER = {"drain_timeout": 2, "heartbeat_interval": 0.5, "reclaim_interval": 1}
APPROVAL_TTL = 30  # never reached by the tests that decide; reached by the expiry test


class Approvals(LivePipeline):
    ledger: Path

    def cli_err(self, *args: str) -> tuple[int, str, str]:
        """Run the CLI in-process: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--config", str(self.config_path), "--redis-url", self.url]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    def waiting(self, cid: str) -> list[dict[str, Any]]:
        return [row for row in self.cli_json("approvals") if row["correlation_id"] == cid]

    def wait_listed(self, cid: str) -> list[dict[str, Any]]:
        return wait_until(lambda: self.waiting(cid), timeout=30, message="listed as waiting")

    def reply_of(self, message: AgentMessage) -> dict[str, Any]:
        found = wait_until(lambda: self.reply_envelopes(message), timeout=60, message="reply")
        assert len(found) == 1, found
        return found[0]

    def trace(self, cid: str) -> list[dict[str, str]]:
        records = self.r.lrange(self.keys.trace(cid), 0, -1)
        return [
            {k.decode(): v.decode() for k, v in expand_trace(record).items()} for record in records
        ]

    def router_pending(self) -> int:
        return sum(
            int(self.r.xpending(stream, "router")["pending"])
            for stream in self.pipeline.routing.inboxes("router")
        )

    def scheduled(self, cid: str) -> list[bytes]:
        members = self.r.zrange(self.keys.schedule("router"), 0, -1)
        return [m for m in members if cid.encode() in m]

    def ledger_calls(self, cid: str, step: str) -> list[str]:
        return calls(self.ledger, f"{cid}:{step}")


@pytest.fixture(scope="module")
def pipe(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Approvals]:
    root = tmp_path_factory.mktemp("approvals")
    agents = six_agents(root)
    agents["safety_checker"]["config"]["policy"]["approval_ttl"] = APPROVAL_TTL
    executor = agents["executor"]["config"]
    executor["allowed_modules"] = ["tests.fixtures"]
    executor["cancel_poll"] = 0.2
    ledger = root / "ledger"
    executor["tools"]["deploy"] = {
        "class": "tests.fixtures.ledger_tool:LedgerTool",
        "options": {"ledger_dir": str(ledger), "hold": 60},
    }
    live = Approvals(
        root,
        redis_server.url,
        child_env(),
        prefix="ap" + uuid.uuid4().hex[:8],
        agents=agents,
        worker=WORKER,
    )
    live.ledger = ledger
    with supervised(live):  # child_env(): this test process's approval key pair
        yield live
    live.close()


def status_groups(pipe: Approvals) -> dict[str, Any]:
    status = pipe.cli_json("status")
    return {
        stream["stream"]: group
        for stream in status["streams"]
        for group in stream.get("groups", [])
        if group.get("group") == "router"
    }


# ------------------------------------------------------------------ the schedule
def test_a_finished_approved_request_leaves_nothing_pending(pipe: Approvals) -> None:
    message = pipe.publish("deploy web to prod version 7")
    cid = str(message.correlation_id)
    rows = pipe.wait_listed(cid)
    assert [(r["step"], r["tool"], r["risk"]) for r in rows] == [("s1", "deploy", "high")]
    assert rows[0]["args"]["service"] == "web" and rows[0]["expires_at"]
    assert pipe.scheduled(cid), "the approval timer is in the router's schedule"
    assert pipe.router_pending() == 0, "nothing of a waiting request is pending in the group"

    code, out, _ = pipe.cli_err("approve", cid, "--by", "tester")
    assert code == EXIT_OK, out
    reply = pipe.reply_of(message)
    assert reply["payload"]["status"] == "succeeded", reply
    assert pipe.ledger_calls(cid, "s1") == ["finished", "started"]

    assert pipe.router_pending() == 0
    assert pipe.scheduled(cid) == [], "the timer was removed when the step was decided"
    for group in status_groups(pipe).values():
        assert group["pending"] == 0
        assert (group["oldest_pending_age_s"] or 0) < 5
    assert pipe.waiting(cid) == []
    code, text = pipe.cli("trace", cid)
    assert "waiting:" not in text, text


def test_an_unanswered_approval_expires_through_the_schedule(pipe: Approvals) -> None:
    """The timer is entered with the expiry; moved forward here (a 30 s TTL would make the
    test slow), it fires on the next sweep on the server's clock and the step is rejected."""
    message = pipe.publish("deploy cache to dev")
    cid = str(message.correlation_id)
    pipe.wait_listed(cid)
    (member,) = wait_until(lambda: pipe.scheduled(cid), timeout=30, message="timer")
    now_ms = int(pipe.r.time()[0]) * 1000
    pipe.r.zadd(pipe.keys.schedule("router"), {member: now_ms}, xx=True)
    reply = pipe.reply_of(message)
    assert reply["payload"]["status"] == "rejected"
    assert any("expired" in r for r in reply["payload"]["reasons"])
    assert pipe.ledger_calls(cid, "s1") == []
    assert pipe.scheduled(cid) == [] and pipe.router_pending() == 0
    published = [e for e in pipe.trace(cid) if e.get("agent") == "schedule"]
    assert [e["message_type"] for e in published] == ["approval.timer"]


# ------------------------------------------------------------------ cancel
def test_cancel_ends_a_request_waiting_for_approval_and_no_tool_runs(pipe: Approvals) -> None:
    message = pipe.publish("deploy db to staging")
    cid = str(message.correlation_id)
    pipe.wait_listed(cid)

    code, out, err = pipe.cli_err("cancel", cid, "--reason", "wrong ticket", "--by", "alice")
    assert code == EXIT_OK, err
    assert f"request {cid} cancelled by alice: wrong ticket" in out
    reply = pipe.reply_of(message)
    assert reply["message_type"] == "request.failed"
    payload = reply["payload"]
    assert (payload["status"], payload["code"]) == ("cancelled", "cancelled")
    assert "alice" in payload["reason"] and "wrong ticket" in payload["reason"]
    assert pipe.waiting(cid) == []

    # an approval arriving after the cancel changes nothing: the approve command says the
    # request was cancelled, and a task signed for the step (as if a decision had raced the cancel)
    # reaches an executor that refuses to start the tool
    code, _, err = pipe.cli_err("approve", cid, "--by", "bob")
    assert code == EXIT_NOT_OK and "cancelled by alice" in err, err
    task = signed_task(pipe, cid)
    wait_until(lambda: handled(pipe, cid, task.message_id), timeout=30, message="task handled")
    assert pipe.ledger_calls(cid, "s1") == []
    assert len(pipe.reply_envelopes(message)) == 1  # still the one terminal reply

    code, text = pipe.cli("trace", cid)
    assert "cancelled (cancelled by alice: wrong ticket)" in text, text


def test_cancel_cuts_a_running_tool_call(pipe: Approvals) -> None:
    message = pipe.publish("deploy slow to dev")
    cid = str(message.correlation_id)
    pipe.wait_listed(cid)
    assert pipe.cli_err("approve", cid, "--by", "tester")[0] == EXIT_OK
    wait_until(lambda: pipe.ledger_calls(cid, "s1") == ["started"], timeout=30, message="run")
    code, out, _ = pipe.cli_err("cancel", cid, "--by", "alice", "--json")
    assert code == EXIT_OK
    result = json.loads(out)
    assert (result["correlation_id"], result["by"], result["reason"]) == (cid, "alice", "")
    assert result["tools_started"] is True  # the deploy had started: it is being cut
    assert pipe.reply_of(message)["payload"]["status"] == "cancelled"
    executor = wait_until(
        lambda: [e for e in pipe.trace(cid) if e.get("agent") == "executor"],
        timeout=30,
        message="the executor let go of the task",
    )
    assert executor[0]["outcome"] == "skipped", executor
    assert pipe.ledger_calls(cid, "s1") == ["started"], "the call was cut, never finished"


def test_cancel_refuses_finished_and_unknown_requests(pipe: Approvals) -> None:
    message = pipe.publish("deploy api to dev")
    cid = str(message.correlation_id)
    pipe.wait_listed(cid)
    assert pipe.cli_err("reject", cid, "--by", "tester")[0] == EXIT_OK
    assert pipe.reply_of(message)["payload"]["status"] == "rejected"

    code, out, err = pipe.cli_err("cancel", cid)
    assert (code, out) == (EXIT_NOT_OK, "")
    assert err.count("\n") == 1 and "already finished" in err, err
    unknown = str(uuid.uuid4())
    code, out, err = pipe.cli_err("cancel", unknown)
    assert (code, out) == (EXIT_NOT_OK, "")
    assert err.count("\n") == 1 and f"request {unknown} is unknown" in err, err
    code, _, err = pipe.cli_err("cancel", "not-a-uuid")
    assert code == 2 and err.count("\n") == 1 and "not a correlation id" in err, err
    assert len(pipe.reply_envelopes(message)) == 1


def signed_task(pipe: Approvals, cid: str) -> AgentMessage:
    """A task for step s1 with a valid Ed25519 approval of ``human:bob`` (signed with this
    test process's key pair, the one the workers hold), in the envelope the approval binds."""
    step = PlanStep(
        id="s1", tool="deploy", args={"service": "db", "environment": "staging"}, risk="high"
    )
    task, message_id = approved_task(step, uuid.UUID(cid), approver="human:bob")
    message = AgentMessage(
        message_id=message_id,
        correlation_id=uuid.UUID(cid),
        from_agent="router",
        to_agent="executor",
        message_type=task.message_type,
        schema_version=task.schema_version,
        payload=task.model_dump(mode="json"),
        timestamp=utcnow(),
        reply_to=pipe.keys.reply(cid),
    )
    return pipe.inject(message)


def handled(pipe: Approvals, cid: str, message_id: uuid.UUID) -> bool:
    return any(
        e.get("message_id") == str(message_id) and e.get("outcome") != "published"
        for e in pipe.trace(cid)
    )


def test_approvals_table_lists_a_waiting_request(pipe: Approvals) -> None:
    message = pipe.publish("deploy search to staging")
    cid = str(message.correlation_id)
    pipe.wait_listed(cid)
    code, text = pipe.cli("approvals")
    assert code == EXIT_OK
    line = next(line for line in text.splitlines() if line.startswith(cid))
    assert "deploy" in line and "high" in line and '"environment": "staging"' in line
    json.loads(json.dumps(pipe.waiting(cid)))  # serialisable as printed
    assert pipe.cli_err("reject", cid)[0] == EXIT_OK
