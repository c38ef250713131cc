"""The executor runs tools under call policies: the worker's ``tool.NAME`` policy when the
worker supplies ``runtime.policies``, else a local one from its config; an open breaker or a
passed deadline is left to the policy middleware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_runtime.agent import Services
from agent_runtime.errors import BreakerOpen, DeadlineExceeded
from agent_runtime.policies import Policies, PolicySet, PolicySpec, RetryPolicy
from agent_runtime.testing import AgentHarness
from agent_runtime.transport.keys import Keys
from agents.executor import Executor
from protocols.pipeline import PlanStep
from tests.fixtures.approvals import harness_message, key_pair


@pytest.fixture(autouse=True)
def approval_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in key_pair().items():
        monkeypatch.setenv(name, value)


def config(tmp: Path, failures: int, **extra: Any) -> dict[str, Any]:
    (tmp / "a.txt").write_text("hello")
    flaky = {
        "class": "tests.fixtures.flaky_tool:FlakyRead",
        "options": {"state_dir": str(tmp / "calls"), "failures": failures},
    }
    return {
        "sandbox": str(tmp),
        "tools": {"file_read": flaky},
        "allowed_modules": ["tests.fixtures"],
        "retry_backoff": 0,
        **extra,
    }


def run(harness: AgentHarness) -> dict[str, Any]:
    step = PlanStep(id="s1", tool="file_read", args={"path": "a.txt"})
    task, message = harness_message(harness, step)
    (out,) = anyio.run(lambda: harness.handle(task, message=message))
    return dict(out.message.payload)


def test_without_worker_policies_the_config_attempts_apply(tmp_path: Path) -> None:
    result = run(AgentHarness(Executor, config=config(tmp_path, failures=2, attempts=3)))
    assert result["status"] == "succeeded" and result["output"] == "hello"
    assert result["attempts"] == 3

    last = config(tmp_path, failures=5, attempts=2, give_up_after=1)  # the last delivery
    result = run(AgentHarness(Executor, config=last))
    assert result["status"] == "failed" and result["attempts"] == 2
    assert "flaky read failed" in result["error"]


def test_the_worker_tool_policy_decides_the_retries(tmp_path: Path) -> None:
    calls = {"tool.file_read": PolicySpec(retry=RetryPolicy(attempts=4, backoff=0, jitter=0))}
    policies = Policies("executor", PolicySet(calls=calls), None, Keys("t"))
    harness = AgentHarness(
        Executor,
        config=config(tmp_path, failures=3, attempts=1),
        services=Services(policies=policies),
    )
    result = run(harness)
    assert result["status"] == "succeeded" and result["attempts"] == 4
    folders = list((tmp_path / "calls").iterdir())
    assert [len(list(f.iterdir())) for f in folders] == [4]


class Refusing:
    """Policies whose every call is refused with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.names: list[str] = []

    def call(self, name: str) -> Refusing:
        self.names.append(name)
        return self

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["stats"].attempts += 1
        raise self.error


@pytest.mark.parametrize("error", [BreakerOpen("tool.file_read", 2.0), DeadlineExceeded("late")])
def test_open_breakers_and_deadlines_propagate_to_the_middleware(
    tmp_path: Path, error: Exception
) -> None:
    policies = Refusing(error)
    harness = AgentHarness(
        Executor, config=config(tmp_path, failures=0), services=Services(policies=policies)
    )
    with pytest.raises(type(error)):
        run(harness)
    assert policies.names == ["tool.file_read"]
    assert not (tmp_path / "calls").exists()  # the tool was never called
