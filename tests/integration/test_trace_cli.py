"""``agent-runtime trace``: a request's messages across agents, in order, with durations."""

from __future__ import annotations

import pytest

from agent_runtime.testing import wait_until
from tests.fixtures.pipeline import LivePipeline, MakePipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def echo_pipeline(make_pipeline: MakePipeline) -> LivePipeline:
    return make_pipeline()


def test_trace_lists_every_hop_in_order_with_durations(echo_pipeline: LivePipeline) -> None:
    p = echo_pipeline
    p.start("echo")
    p.start("sink")
    message = p.publish("trace me")
    cid = str(message.correlation_id)
    wait_until(lambda: p.replies(message), 20, message="reply")
    wait_until(lambda: p.r.llen(p.keys.trace(cid)) >= 3, message="trace entries")

    steps = p.cli_json("trace", cid)
    assert [
        (s["agent"], s["from_agent"], s["to_agent"], s["message_type"], s["outcome"]) for s in steps
    ] == [
        ("client", "client", "echo", "user.request", "published"),
        ("echo", "client", "echo", "user.request", "handled"),
        ("sink", "echo", "sink", "test.echoed", "handled"),
    ]
    assert steps[1]["message_id"] == str(message.message_id)
    assert steps[2]["causation_id"] == str(message.message_id)
    assert steps[1]["outputs"] == [
        {"message_id": steps[2]["message_id"], "message_type": "test.echoed", "to": "sink"}
    ]
    assert steps[2]["outputs"][0]["to"] == "client"
    for step in steps[1:]:
        assert step["delivery_count"] == 1
        assert step["duration_ms"] >= 0
        assert step["finished_ms"] >= step["started_ms"] >= steps[0]["started_ms"]
    assert steps[1]["started_ms"] <= steps[2]["started_ms"]

    code, text = p.cli("trace", cid)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"request {cid}: 3 steps over ")
    assert [i for i, line in enumerate(lines) if "client -> echo" in line] == [2, 3]
    assert "echo -> sink" in lines[4] and "handled" in lines[4]
    assert "waiting" not in text


def test_trace_of_an_unknown_request_says_so(echo_pipeline: LivePipeline) -> None:
    code, text = echo_pipeline.cli("trace", "6f1d7c1e-2a55-4d0b-9a7e-3c1b5e9a0f42")
    assert code == 1
    assert "no trace for request" in text


def test_trace_shows_where_a_request_waits(echo_pipeline: LivePipeline) -> None:
    p = echo_pipeline
    p.start("echo")  # no sink running: the echoed message waits in the sink's inbox
    message = p.publish("stuck")
    cid = str(message.correlation_id)
    wait_until(lambda: p.r.llen(p.keys.trace(cid)) >= 2, 20, message="echo handled")
    code, text = p.cli("trace", cid)
    assert code == 0
    assert "waiting: test.echoed" in text and "at sink" in text
