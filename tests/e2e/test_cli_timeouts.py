"""Timeouts as the CLI user sees them: when a request's deadline passes at some hop, the
runtime replies ``request.failed`` (status ``timeout``); ``agent-runtime run`` and
``agent-runtime send --wait`` print it and exit 3 (the README's exit status table)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
import yaml

from agent_runtime.worker.supervisor import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]
FAST = {"block_ms": 100, "heartbeat_interval": 0.2, "drain_timeout": 2, "retry_backoff": 0.05}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def pipeline_config(tmp: Path) -> Path:
    """The six agents; the shell may run ``sleep`` (a step slower than the deadline)."""
    sandbox = tmp / "sandbox"
    sandbox.mkdir()
    config = {
        "key_prefix": "e2et" + uuid.uuid4().hex[:8],
        "worker": FAST,
        "agents": {
            "intent_parser": {"class": "agents.intent_parser:IntentParser"},
            "planner": {"class": "agents.planner:Planner"},
            "safety_checker": {
                "class": "agents.safety_checker:SafetyChecker",
                "config": {"policy": {"shell": {"commands": ["sleep", "echo"]}}},
            },
            "router": {"class": "agents.router:Router", "config": {"timer_poll": 0.5}},
            "executor": {
                "class": "agents.executor:Executor",
                "config": {"sandbox": str(sandbox)},
            },
            "reporter": {"class": "agents.reporter:Reporter"},
        },
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_exits_3_with_the_timeout_reply_when_the_deadline_passes(
    tmp_path: Path, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = pipeline_config(tmp_path)
    env = {**subprocess_env, "AGENT_RUNTIME_HOME": str(tmp_path)}
    done = cli(
        "run",
        "run sleep 20",
        "--json",
        "--timeout",
        "2",
        "--config",
        str(config),
        "--redis-url",
        redis_url,
        env=env,
    )
    assert done.returncode == 3, done.stderr[-3000:]
    failed = json.loads(done.stdout)
    assert failed["message_type"] == "request.failed"
    assert failed["status"] == "timeout" and failed["reason"]
    assert "Traceback" not in done.stderr

    text = cli(
        "run",
        "run sleep 20",
        "--timeout",
        "0.5",
        "--config",
        str(config),
        "--redis-url",
        redis_url,
        env=env,
    )
    assert text.returncode == 3, text.stderr[-3000:]
    assert text.stdout.startswith("request timeout: ")


@pytest.mark.anyio
async def test_send_wait_exits_3_when_the_reply_is_a_timeout(
    tmp_path: Path, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = pipeline_config(tmp_path)
    env = dict(subprocess_env)  # holds the approval key pair
    async with Supervisor(config, redis_url, env=env, log_dir=tmp_path / "logs") as sup:
        await sup.wait_ready(60)
        done = await anyio.to_thread.run_sync(
            lambda: cli(
                "send",
                "run sleep 20",
                "--wait",
                "--json",
                "--timeout",
                "1.5",
                "--config",
                str(config),
                "--redis-url",
                redis_url,
                env=env,
            )
        )
    assert done.returncode == 3, done.stderr
    reply = json.loads(done.stdout)
    assert reply["message_type"] == "request.failed"
    assert reply["payload"]["status"] == "timeout"
    assert "did not succeed" in done.stderr
