"""The default six-agent pipeline (real worker processes): ``trace`` lists every agent's
messages of one request in order, with durations."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agent_runtime.cli import main
from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.worker.supervisor import Supervisor

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAST = {"block_ms": 100, "heartbeat_interval": 0.2, "drain_timeout": 2, "retry_backoff": 0.05}


def six_agent_config(tmp: Path, prefix: str) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    data["key_prefix"] = prefix
    data["worker"] = {**data.get("worker", {}), **FAST}
    for spec in data["agents"].values():
        spec["replicas"] = 1  # two cores shared by everyone: one process per agent type
    safety = data["agents"]["safety_checker"]["config"]
    safety["policy_file"] = str(ROOT / "configs" / safety["policy_file"])
    data["agents"]["executor"]["config"]["sandbox"] = str(ROOT)
    path = tmp / "default.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_trace_of_a_request_through_all_six_agents(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str]
) -> None:
    config = six_agent_config(tmp_path, prefix)
    pipeline = Pipeline.load(config)
    env = {**subprocess_env, "AGENT_RUNTIME_APPROVAL_KEY": secrets.token_hex(32)}

    async def run() -> str:
        async with Supervisor(config, redis_url, env=env, log_dir=tmp_path / "logs") as sup:
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
