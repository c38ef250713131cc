"""A synchronous tool function that hangs is really cut: it runs in a child process of its own
(agents/executors/isolated.py) that the timeout kills, so its late result is never read and
the cut counts as a transient failure; the tool's circuit breaker (real server) opens after the
configured failures, and a step timeout is redelivered like any transient failure."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.agent import Services
from agent_runtime.errors import BreakerOpen
from agent_runtime.policies import Policies, PolicySet
from agent_runtime.policies.errors import classify
from agent_runtime.testing import AgentHarness, wait_until
from agent_runtime.transport.connect import connect
from agent_runtime.transport.keys import Keys
from agents.executor import Executor
from agents.executors.base import ToolContext, ToolError, TransientToolError
from agents.executors.python import Python, PythonOptions
from protocols.pipeline import PlanStep
from tests.fixtures.approvals import harness_message, key_pair

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HANG = {"hang": "tests.fixtures.slow_functions:hang"}
OTHERS = {
    "fails": "tests.fixtures.slow_functions:fails",
    "big": "tests.fixtures.slow_functions:big",
}


@pytest.fixture(autouse=True)
def approval_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in key_pair().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url).redis
    yield client
    await client.aclose()


def markers(state: Path, kind: str) -> list[Path]:
    return sorted(state.glob(f"{kind}-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def executor_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    python = {
        "class": "agents.executors.python:Python",
        "options": {"functions": HANG, "allowed_modules": ["tests.fixtures"], "timeout": 1},
    }
    return {
        "sandbox": str(tmp),
        "tools": {"python": python},
        "allowed_modules": ["tests.fixtures"],
        **extra,
    }


async def run_step(harness: AgentHarness, state: Path, delivery: int = 1) -> dict[str, Any]:
    args = {"function": "hang", "kwargs": {"state_dir": str(state)}}
    step = PlanStep(id="s1", tool="python", args=args)
    task, message = harness_message(harness, step)
    (out,) = await harness.handle(task, message=message, delivery_count=delivery)
    return dict(out.message.payload)


async def test_a_hanging_sync_function_is_cut_and_its_late_result_discarded(
    tmp_path: Path,
) -> None:
    tool = Python(PythonOptions(functions=HANG, allowed_modules=["tests.fixtures"], timeout=1))
    context = ToolContext("c", "s1", "c:s1", tmp_path)
    with pytest.raises(TransientToolError, match="timed out after 1"):
        await tool.run({"function": "hang", "kwargs": {"state_dir": str(tmp_path)}}, context)
    [started] = markers(tmp_path, "started")
    pid = int(started.name.split("-")[1])
    assert pid != os.getpid()  # it ran in a child process...
    wait_until(lambda: not alive(pid), 5, message="the child killed")
    assert markers(tmp_path, "late") == []  # ...killed before it could finish


async def test_cut_calls_count_as_failures_and_open_the_breaker(
    tmp_path: Path, redis: Any, prefix: str
) -> None:
    breaker = {"fail_max": 2, "reset_timeout": 60}
    calls = {"tool.python": {"retry": {"attempts": 1}, "breaker": breaker}}
    policies = Policies("executor", PolicySet.model_validate({"calls": calls}), redis, Keys(prefix))
    config = executor_config(tmp_path, give_up_after=1)
    harness = AgentHarness(Executor, config=config, services=Services(policies=policies))
    state = tmp_path / "state"
    state.mkdir()

    for _ in range(2):
        result = await run_step(harness, state)
        assert result["status"] == "failed" and "timed out" in result["error"]
    with pytest.raises(BreakerOpen):
        await run_step(harness, state)
    assert len(markers(state, "started")) == 2  # the open breaker refused the third call
    assert markers(state, "late") == []
    fields = await redis.hgetall(Keys(prefix).breaker("tool.python"))
    assert fields[b"state"] == b"open" and fields[b"trips"] == b"1"


async def test_a_step_timeout_is_transient_and_redelivered(tmp_path: Path) -> None:
    harness = AgentHarness(Executor, config=executor_config(tmp_path, give_up_after=2))
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(TransientToolError, match="timed out") as caught:
        await run_step(harness, state, delivery=1)
    assert classify(caught.value) == "transient"  # the worker redelivers it with backoff
    result = await run_step(harness, state, delivery=2)  # the last delivery: the step fails
    assert result["status"] == "failed" and "timed out" in result["error"]


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("tool", ToolError, "bad argument"),
        ("transient", TransientToolError, "try again"),
        ("bug", ToolError, "function raised ValueError: a bug"),
    ],
)
async def test_errors_of_an_isolated_function_reach_the_step(
    tmp_path: Path, kind: str, error: type[Exception], text: str
) -> None:
    tool = Python(PythonOptions(functions=OTHERS, allowed_modules=["tests.fixtures"]))
    context = ToolContext("c", "s1", "c:s1", tmp_path)
    with pytest.raises(error, match=text) as caught:
        await tool.run({"function": "fails", "kwargs": {"kind": kind}}, context)
    assert isinstance(caught.value, TransientToolError) == (kind == "transient")


async def test_a_long_answer_is_cut_at_max_output_bytes(tmp_path: Path) -> None:
    options = PythonOptions(functions=OTHERS, allowed_modules=["tests.fixtures"])
    tool = Python(options.model_copy(update={"max_output_bytes": 10}))
    context = ToolContext("c", "s1", "c:s1", tmp_path)
    out = await tool.run({"function": "big", "kwargs": {"size": 100}}, context)
    assert out.truncated and out.output == '"' + "x" * 9
