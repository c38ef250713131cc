"""The router's optimistic transactions on real servers (single node and Redis Cluster): many
results of one request handled concurrently by two router instances with their own
connections dispatch every step exactly once."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from agent_runtime.testing import AgentHarness
from agent_runtime.transport.connect import connect
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.state import RedisState
from agents.router import Router
from protocols.envelope import utcnow
from protocols.pipeline import Plan, PlanStep, RequestInfo, SafetyVerdict, StepResult
from tests.fixtures.approvals import placeholder

pytestmark = pytest.mark.integration


def fan_plan(width: int) -> Plan:
    first = [
        PlanStep(id=f"a{i}", tool="shell", args={"argv": ["echo", str(i)]}) for i in range(width)
    ]
    second = [
        PlanStep(
            id=f"b{i}",
            tool="shell",
            args={"argv": ["echo", str(i)]},
            depends_on=[s.id for s in first],
        )
        for i in range(width)
    ]
    return Plan(
        request=RequestInfo(text="t", requested_at=utcnow()),
        steps=first + second,
        cost_estimate_usd=0.0,
    )


def harness(url: str, prefix: str) -> AgentHarness:
    h = AgentHarness(
        Router,
        state=RedisState(connect(url).redis),
        name="router",
        config={"executors": {"executor": ["shell"]}},
    )
    h.agent.runtime.keys = Keys(prefix)
    return h


@pytest.mark.parametrize("target", ["server", "cluster"])
def test_concurrent_results_dispatch_each_step_once(
    target: str, prefix: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url" if target == "server" else "redis_cluster_url")
    routers = [harness(url, prefix), harness(url, prefix)]
    cid = uuid.uuid4()
    width = 6
    plan = fan_plan(width)
    verdict = SafetyVerdict(
        decision="approved",
        plan=plan,
        approvals=[placeholder(s.id) for s in plan.steps],
    )
    dispatched: list[str] = []
    finished: list[Any] = []

    async def handle(h: AgentHarness, payload: Any) -> None:
        outputs = await h.handle(payload, message=h.message_for(payload, correlation_id=cid))
        for out in outputs:
            if out.message.message_type == "task.dispatched":
                dispatched.append(out.message.payload["step"]["id"])
            if out.message.message_type == "plan.finished":
                finished.append(out.message.payload)

    async def scenario() -> None:
        await handle(routers[0], verdict)
        async with anyio.create_task_group() as tg:
            for i in range(width):
                tg.start_soon(
                    handle,
                    routers[i % 2],
                    StepResult(step_id=f"a{i}", tool="shell", status="succeeded"),
                )
        async with anyio.create_task_group() as tg:
            for i in range(width):
                tg.start_soon(
                    handle,
                    routers[i % 2],
                    StepResult(step_id=f"b{i}", tool="shell", status="succeeded"),
                )
        for h in routers:
            await h.agent.runtime.state._redis.aclose()  # the client this test made

    anyio.run(scenario)
    assert sorted(dispatched) == sorted(s.id for s in plan.steps)
    assert len(finished) == 1 and finished[0]["status"] == "succeeded"
