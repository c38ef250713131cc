"""The six agents end to end: real worker processes (Supervisor), the session's embedded
server, the offline rules provider. One pipeline serves the whole module (router and executor
with two replicas each); every test uses its own requests (correlation ids)."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from anyio.from_thread import BlockingPortal

from agent_runtime.approval import generate_pair, pending_approvals, signer, submit_decision
from agent_runtime.cli import main
from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.delivery import expand_trace
from agents.approvals import task_message_id
from protocols.pipeline import PlanStep, Report, StepApproval, StepResult, Task
from tests.fixtures.approvals import signed_task, with_id
from tests.fixtures.pipeline import LivePipeline, child_env, six_agents, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
T = TypeVar("T")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


WORKER = {"drain_timeout": 2, "heartbeat_interval": 0.5, "reclaim_interval": 1}


class Running:
    """The module's pipeline: call async helpers from the sync tests through the portal."""

    def __init__(
        self, portal: BlockingPortal, url: str, config: Path, root: Path, http_base: str
    ) -> None:
        self.portal = portal
        self.url = url
        self.pipeline = Pipeline.load(config)
        self.root = root
        self.http_base = http_base

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        async def run() -> T:
            async with Client.connect(self.url, self.pipeline) as client:
                return await fn(client)

        return self.portal.call(run)

    def request(self, text: str, *, budget: float | None = None) -> tuple[str, Report]:
        async def go(client: Client) -> tuple[str, Report]:
            message = await client.publish(text, timeout=60, budget_usd=budget)
            reply = await client.wait_reply(message, 60)
            assert isinstance(reply.payload, Report)
            return str(message.correlation_id), reply.payload

        return self.call(go)

    def trace(self, cid: str) -> list[dict[str, str]]:
        async def read(client: Client) -> list[dict[str, str]]:
            records = await client.redis.lrange(client.keys.trace(cid), 0, -1)
            return [
                {k.decode(): v.decode() for k, v in expand_trace(record).items()}
                for record in records
            ]

        return self.call(read)

    def handled(self, cid: str, agent: str) -> list[dict[str, str]]:
        return [e for e in self.trace(cid) if e["agent"] == agent and e["outcome"] == "handled"]


@pytest.fixture(scope="module")
def running(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    root = tmp_path_factory.mktemp("pipeline")
    pipe = LivePipeline(
        root,
        redis_server.url,
        child_env(),
        prefix="e2e" + uuid.uuid4().hex[:8],
        agents=six_agents(root, "127.0.0.1"),
        worker=WORKER,
    )
    with supervised(pipe) as (portal, _):
        yield Running(portal, redis_server.url, pipe.config_path, root, f"http://{host}")
    pipe.close()
    server.shutdown()
    server.server_close()


def steps(report: Report) -> dict[str, Any]:
    return {s.id: s for s in report.steps}


# ------------------------------------------------------------------ grammar requests
def test_list_and_read_files(running: Running) -> None:
    _, report = running.request("list files in data and read data/notes.txt")
    assert report.status == "succeeded", report.reasons
    s = steps(report)
    assert [e["name"] for e in s["s1"].output] == ["notes.txt"]
    assert s["s2"].output == "alpha beta gamma\ndelta\n"


def test_run_a_command(running: Running) -> None:
    _, report = running.request('run echo "hello and goodbye"')
    assert report.status == "succeeded", report.reasons
    assert steps(report)["s1"].output["stdout"] == "hello and goodbye\n"


def test_fetch_a_url_from_an_allowed_host(running: Running) -> None:
    _, report = running.request(f"fetch {running.http_base}/greeting")
    assert report.status == "succeeded", report.reasons
    assert steps(report)["s1"].output["body"] == "hello from /greeting"


def test_count_words(running: Running) -> None:
    _, report = running.request("count words in data/notes.txt")
    assert report.status == "succeeded", report.reasons
    assert steps(report)["s1"].output == {
        "path": "data/notes.txt",
        "lines": 2,
        "words": 4,
        "bytes": 23,
    }


def test_parallel_steps_then_a_dependent_step(running: Running) -> None:
    cid, report = running.request(
        "run date and run whoami and read data/notes.txt then run uname -a"
    )
    assert report.status == "succeeded", report.reasons
    s = steps(report)
    assert s["s4"].depends_on == ["s1", "s2", "s3"]
    assert all(s[d].finished_at <= s["s4"].started_at for d in ("s1", "s2", "s3"))
    first = next(e for e in running.handled(cid, "router") if e["message_type"] == "plan.verdict")
    dispatched = [o for o in json.loads(first["outputs"]) if o["message_type"] == "task.dispatched"]
    assert len(dispatched) == 3  # the independent steps left together, before any result
    assert len(running.handled(cid, "executor")) == 4


def test_text_outside_the_grammar_is_reported_invalid(running: Running) -> None:
    cid, report = running.request("please make me a sandwich")
    assert report.status == "invalid_request" and "cannot understand" in report.reasons[0]
    assert running.handled(cid, "planner") == []


# ------------------------------------------------------------------ policy and budget
def test_a_rejected_plan_runs_nothing(running: Running) -> None:
    cid, report = running.request("run echo fine and run cat data/notes.txt")
    assert report.status == "rejected"
    assert any("'cat' is not on the allow-list" in r for r in report.reasons)
    assert {s.status for s in report.steps} == {"not_run"}
    assert running.handled(cid, "executor") == []


def test_budget_exceeded_ends_with_a_report_and_runs_nothing(running: Running) -> None:
    cid, report = running.request("run echo one and run echo two", budget=0.00015)
    assert report.status == "budget_exceeded"
    assert "budget" in report.reasons[0]
    assert running.handled(cid, "executor") == []


# ------------------------------------------------------------------ human approval
def wait_pending(running: Running, cid: str) -> dict[str, Any]:
    return wait_until(
        lambda: running.call(lambda c: pending_approvals(c.state, c.keys, cid)),
        timeout=20,
        message="approval",
    )


def publish(running: Running, text: str) -> Any:
    return running.call(lambda c: c.publish(text, timeout=60))


def reply(running: Running, message: Any) -> Report:
    decoded = running.call(lambda c: c.wait_reply(message, 30))
    assert isinstance(decoded.payload, Report)
    return decoded.payload


def test_approval_resumes_the_plan_without_rerunning_finished_steps(running: Running) -> None:
    message = publish(running, "run echo before then deploy web to prod version 7")
    cid = str(message.correlation_id)
    assert list(wait_pending(running, cid)) == ["s2"]
    wait_until(lambda: len(running.handled(cid, "executor")) == 1, timeout=20, message="s1 ran")
    covered = running.call(
        lambda c: submit_decision(c, cid, approved=True, steps=["s2"], approver="tester")
    )
    assert covered == ["s2"]
    report = reply(running, message)
    assert report.status == "succeeded", report.reasons
    assert steps(report)["s2"].output["version"] == "7"
    assert len(running.handled(cid, "executor")) == 2  # s1 ran once, s2 once
    record = json.loads((running.root / "deploys" / "web@prod.json").read_text())
    assert record["idempotency_key"] == f"{cid}:s2"


def test_rejecting_an_approval_rejects_the_step(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    message = publish(running, "deploy db to staging")
    cid = str(message.correlation_id)
    waiting = list(wait_pending(running, cid))
    # through the CLI, as an operator does: `reject CID --json` says what it decided
    config = str(running.pipeline.source)
    argv = ["reject", cid, "--by", "tester", "--comment", "not today", "--json"]
    assert main([*argv, "--config", config, "--redis-url", running.url]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "correlation_id": cid,
        "decision": "rejected",
        "steps": waiting,
        "by": "tester",
        "comment": "not today",
    }
    report = reply(running, message)
    assert report.status == "rejected" and "not today" in report.reasons[0]
    assert running.handled(cid, "executor") == []


def test_an_unanswered_approval_expires_and_rejects(running: Running) -> None:
    message = publish(running, "deploy cache to dev")
    report = reply(running, message)  # approval_ttl is 10 s in this pipeline
    assert report.status == "rejected"
    assert steps(report)["s1"].status == "rejected"
    assert any("expired" in r for r in report.reasons)
    assert running.handled(str(message.correlation_id), "executor") == []


# ------------------------------------------------------------------ executor refuses forgeries
def test_forged_or_mismatched_approvals_are_refused(running: Running) -> None:
    step = PlanStep(id="s1", tool="deploy", args={"service": "forged", "environment": "prod"})
    other_args = step.model_copy(update={"args": {"service": "other", "environment": "prod"}})

    def approval(target: PlanStep, cid: uuid.UUID, **options: Any) -> StepApproval:
        task, _ = signed_task(target, cid, **options)
        assert task.approval is not None
        return task.approval

    cases: list[tuple[uuid.UUID, StepApproval | None]] = []
    for make in (
        lambda cid: approval(step, cid).model_copy(update={"signature": "f" * 128}),
        lambda cid: approval(other_args, cid),
        lambda cid: approval(step, cid, signer_=signer(generate_pair())),
        lambda cid: None,
    ):
        cid = uuid.uuid4()
        cases.append((cid, make(cid)))

    async def inject(client: Client) -> list[StepResult]:
        sent = []
        for cid, approval in cases:  # each its own request: the task id is fixed per step
            task = Task(step=step, approval=approval, idempotency_key=f"{cid}:s1")
            message = with_id(
                client.new_message(task, to="executor", correlation_id=cid),
                task_message_id(str(cid), "s1"),
            )
            await client.send(message)
            sent.append(message.message_id)
        return await _results_for(client, sent)

    results = running.call(inject)
    foreign = cases[2][1]
    assert foreign is not None
    assert [r.status for r in results] == ["refused"] * 4
    assert [r.error for r in results] == [
        "refused: the approval signature does not match this task",
        "refused: the approval is for other arguments",
        f"refused: the approval is signed by an unknown key {foreign.key_id}",
        "refused: the task carries no safety approval",
    ]
    assert not (running.root / "deploys" / "forged@prod.json").exists()


async def _results_for(client: Client, causes: list[uuid.UUID]) -> list[StepResult]:
    """The executor's StepResults answering ``causes``, read from the router inbox."""
    found: dict[uuid.UUID, StepResult] = {}
    with anyio.fail_after(20):
        while len(found) < len(causes):
            for stream in client.pipeline.routing.inboxes("router"):
                for _id, fields in await client.redis.xrange(stream):
                    decoded = client.codec.decode(fields, stream)
                    if decoded.message.causation_id in causes:
                        assert isinstance(decoded.payload, StepResult)
                        found[decoded.message.causation_id] = decoded.payload
            await anyio.sleep(0.05)
    return [found[c] for c in causes]


# ------------------------------------------------------------------ two routers
def test_two_router_replicas_never_double_dispatch(running: Running) -> None:
    text = (
        "run echo 1 and run echo 2 and run echo 3 and run echo 4 and run echo 5 "
        "then run echo 6 and run echo 7"
    )

    async def many(client: Client) -> list[tuple[str, Report]]:
        messages = [await client.publish(text, timeout=60) for _ in range(6)]
        out = []
        for message in messages:
            decoded = await client.wait_reply(message, 60)
            assert isinstance(decoded.payload, Report)
            out.append((str(message.correlation_id), decoded.payload))
        return out

    results = running.call(many)
    consumers: set[str] = set()
    for cid, report in results:
        assert report.status == "succeeded", report.reasons
        routed = running.handled(cid, "router")
        consumers.update(e["consumer"] for e in routed)
        dispatched = {
            o["message_id"]
            for e in routed
            for o in json.loads(e["outputs"])
            if o["message_type"] == "task.dispatched"
        }
        assert len(dispatched) == 7
        assert len(running.handled(cid, "executor")) == 7
        assert sorted(int(steps(report)[f"s{i}"].output["stdout"]) for i in range(1, 8)) == list(
            range(1, 8)
        )
    assert len(consumers) == 2  # both replicas took part
