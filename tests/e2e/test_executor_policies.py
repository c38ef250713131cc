"""The six-agent pipeline (real worker processes, the session's embedded server) with the
executor's tools under the worker's resilience policies, and reports redacted by the reporter.

* a tool that fails twice then succeeds is retried by its ``tool.NAME`` call policy and the
  request succeeds, with the attempts recorded in the step result (issue 4);
* a canary secret in a step's arguments and output never reaches the report, neither the reply
  nor the reports stream (issue 5).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.embedded import EmbeddedServer
from protocols.pipeline import Report
from tests.fixtures.flaky_tool import call_dir
from tests.fixtures.pipeline import LivePipeline, child_env, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
ENV_CANARY = "canaryenv" + uuid.uuid4().hex[:12]


def agents(root: Path) -> dict[str, Any]:
    sandbox = root / "sandbox"
    (sandbox / "data").mkdir(parents=True)
    (sandbox / "data" / "notes.txt").write_text("alpha beta gamma\n")
    tools = {
        "shell": {"class": "agents.executors.shell:Shell"},
        "file_read": {
            "class": "tests.fixtures.flaky_tool:FlakyRead",
            "options": {"state_dir": str(root / "calls"), "failures": 2},
        },
    }
    executor = {
        "class": "agents.executor:Executor",
        # one local attempt: only the worker's call policy can make the flaky tool succeed
        "config": {
            "sandbox": str(sandbox),
            "tools": tools,
            "attempts": 1,
            "allowed_modules": ["tests.fixtures"],
        },
        "policies": {
            "calls": {
                "tool.file_read": {
                    "retry": {"attempts": 3, "backoff": 0.05, "jitter": 0.01},
                    "breaker": {"fail_max": 10, "reset_timeout": 5},
                }
            }
        },
    }
    return {
        "intent_parser": {"class": "agents.intent_parser:IntentParser"},
        "planner": {"class": "agents.planner:Planner"},
        "safety_checker": {
            "class": "agents.safety_checker:SafetyChecker",
            "config": {"policy": {"shell": {"commands": ["echo"]}}},
        },
        "router": {"class": "agents.router:Router", "config": {"timer_poll": 0.5}},
        "executor": executor,
        "reporter": {"class": "agents.reporter:Reporter"},
    }


class Running:
    def __init__(self, url: str, config: Path, root: Path) -> None:
        self.url = url
        self.pipeline = Pipeline.load(config)
        self.root = root

    def request(self, text: str) -> tuple[str, Report]:
        async def go() -> tuple[str, Report]:
            async with Client.connect(self.url, self.pipeline) as client:
                message = await client.publish(text, timeout=60)
                reply = await client.wait_reply(message, 60)
                assert isinstance(reply.payload, Report), reply.payload
                return str(message.correlation_id), reply.payload

        return anyio.run(go)

    def reports_stream(self) -> str:
        r = redis.Redis.from_url(self.url)
        try:
            entries = r.xrange(self.pipeline.config.keys.reports()) or []
            return json.dumps([str(fields) for _id, fields in entries])
        finally:
            r.close()


@pytest.fixture(scope="module")
def running(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("executor-policies")
    pipe = LivePipeline(
        root,
        redis_server.url,
        child_env(),
        prefix="e2ex" + uuid.uuid4().hex[:8],
        agents=agents(root),
        worker={"drain_timeout": 2, "heartbeat_interval": 0.5, "reclaim_interval": 1},
    )
    env = {"PAYMENTS_API_TOKEN": ENV_CANARY}
    with supervised(pipe, env=env):
        yield Running(redis_server.url, pipe.config_path, root)
    pipe.close()


def test_a_tool_failing_twice_is_retried_and_the_attempts_are_recorded(
    running: Running,
) -> None:
    cid, report = running.request("read data/notes.txt")
    assert report.status == "succeeded", report.reasons
    (step,) = report.steps
    assert step.tool == "file_read" and step.output == "alpha beta gamma\n"
    assert step.attempts == 3
    calls = call_dir(running.root / "calls", f"{cid}:{step.id}")
    assert len(list(calls.iterdir())) == 3  # the tool really ran three times, once per attempt


def test_a_canary_secret_in_step_arguments_and_output_never_reaches_the_report(
    running: Running,
) -> None:
    payload_canary = "canarypay" + uuid.uuid4().hex[:12]
    _cid, report = running.request(f"run echo password={payload_canary} {ENV_CANARY}")
    assert report.status == "succeeded", report.reasons
    (step,) = report.steps
    assert step.output["stdout"].startswith("password=***")  # the command did run
    text = json.dumps(report.model_dump(mode="json")) + running.reports_stream()
    assert "password=***" in text
    for secret in (payload_canary, ENV_CANARY):
        assert secret not in text
