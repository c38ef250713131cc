"""Hostile bytes in the router's stored plan (a Redis value any client with write access can
overwrite): handling a result for that request fails with an error the fate function treats
as permanent (dead letter + the requester's request.failed on the first delivery), never a
hang, a crash of another kind or a retry loop. (An empty value reads as no plan yet, which
the router waits for, as for a missing key.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.policies.errors import classify
from agent_runtime.testing import AgentHarness
from agents.router import PLAN_STATE, Router
from protocols.pipeline import StepResult

pytestmark = pytest.mark.anyio

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
HOSTILE = (
    st.binary(min_size=1, max_size=2_000)
    | JSONISH.map(lambda v: repr(v).encode())
    | st.just(b"[" * 100_000)
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stored=HOSTILE)
async def test_a_tampered_plan_is_a_permanent_error_of_that_message(stored: bytes) -> None:
    harness = AgentHarness(Router)
    result = StepResult(step_id="a", tool="shell", status="succeeded")
    message = harness.message_for(result)
    key = harness.agent.runtime.keys.request_state(str(message.correlation_id), PLAN_STATE)
    await harness.state.put(key, stored, ttl=60)
    with pytest.raises(Exception) as caught:
        await harness.handle(result, message=message)
    assert classify(caught.value) == "permanent"
