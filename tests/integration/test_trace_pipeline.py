"""The default six-agent pipeline (real worker processes): ``trace`` lists every agent's
messages of one request in order, with durations."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import anyio
import pytest

from agent_runtime.cli import main
from agent_runtime.client import Client
from tests.fixtures.pipeline import MakePipeline, default_pipeline

pytestmark = pytest.mark.integration

FAST = {"block_ms": 100, "heartbeat_interval": 0.2, "drain_timeout": 2, "retry_backoff": 0.05}


def test_trace_of_a_request_through_all_six_agents(make_pipeline: MakePipeline) -> None:
    pipe = make_pipeline(**default_pipeline(**FAST))
    config, pipeline, redis_url = pipe.config_path, pipe.pipeline, pipe.url

    async def run() -> str:
        async with pipe.supervisor() as sup:  # the approval keys: the test helpers' pair
            await sup.wait_ready(90)
            async with Client.connect(redis_url, pipeline) as client:
                reply = await client.request("list files in configs", timeout=60)
                assert reply.message.message_type.startswith("report")
                return str(reply.message.correlation_id)

    cid = anyio.run(run)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(["trace", cid, "--json", "--config", str(config), "--redis-url", redis_url]) == 0
        )
    steps: list[dict[str, Any]] = json.loads(out.getvalue())

    handled = [s for s in steps if s["outcome"] == "handled"]
    agents = [s["agent"] for s in handled]
    assert steps[0]["outcome"] == "published" and steps[0]["to_agent"] == "intent_parser"
    assert agents[:3] == ["intent_parser", "planner", "safety_checker"]
    assert agents[3] == "router" and agents[-1] == "reporter"
    assert {"executor", "router"} <= set(agents[3:-1])
    assert set(agents) == {
        "intent_parser",
        "planner",
        "safety_checker",
        "router",
        "executor",
        "reporter",
    }
    starts = [s["started_ms"] for s in steps]
    assert starts == sorted(starts)
    by_id = {s["message_id"]: s for s in handled}
    for step in handled[1:]:  # each hop answers a message handled earlier in the trace
        assert by_id[step["causation_id"]]["finished_ms"] <= step["started_ms"] + 1
    assert all(s["duration_ms"] >= 0 and s["delivery_count"] == 1 for s in handled)
    assert handled[-1]["outputs"] and handled[-1]["outputs"][0]["to"] == "client"

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["trace", cid, "--config", str(config), "--redis-url", redis_url])
    text = out.getvalue()
    assert "intent_parser -> planner" in text and "waiting" not in text
    print(text)  # the timeline, for the record (pytest -s)
