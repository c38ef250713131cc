"""The installed ``agent-runtime`` console script: validate exit codes, send --wait --json
against real workers, clear errors without a server, exit 3 on a reply timeout, and ``up``
against an existing server (--redis-url)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from agent_runtime.testing import wait_until
from agent_runtime.worker.supervisor import Supervisor

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "agent-runtime")
FAST = {"block_ms": 100, "heartbeat_interval": 0.2, "drain_timeout": 2}


def write_config(tmp: Path, prefix: str, **extra: object) -> Path:
    config = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "worker": FAST,
        "agents": {
            "echo": {"class": "tests.fixtures.agents:Echo"},
            "sink": {"class": "tests.fixtures.agents:Sink", **extra},
        },
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_env(tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """No embedded server recorded in this (empty) runtime dir, no Redis URL in the env."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {**env, "AGENT_RUNTIME_HOME": str(home)}


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_validate_ok(tmp_path: Path, prefix: str, subprocess_env: dict[str, str]) -> None:
    result = cli("validate", str(write_config(tmp_path, prefix)), env=subprocess_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("OK")
    assert re.search(
        r"^echo\s+tests\.fixtures\.agents:Echo\s+user\.request\s+test\.echoed\s+1$",
        result.stdout,
        re.M,
    )


def test_validate_reports_unknown_key_with_line(
    tmp_path: Path, prefix: str, subprocess_env: dict[str, str]
) -> None:
    path = write_config(tmp_path, prefix, replica=3)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "replica:" in text)
    result = cli("validate", str(path), env=subprocess_env)
    assert result.returncode == 2
    assert f"{path}:{line}: agents.sink.replica: unknown key" in result.stderr
    assert "OK" not in result.stdout


def test_validate_checks_worker_overrides(
    tmp_path: Path, prefix: str, subprocess_env: dict[str, str]
) -> None:
    path = write_config(tmp_path, prefix, worker={"concurrency": 0})
    result = cli("validate", "--config", str(path), env=subprocess_env)
    assert result.returncode == 2
    assert "agents.sink.worker" in result.stderr and "concurrency" in result.stderr


def test_validate_missing_file(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    result = cli("validate", str(tmp_path / "nope.yaml"), env=subprocess_env)
    assert result.returncode == 2
    assert "cannot read config" in result.stderr


def test_send_without_a_server_says_so(
    tmp_path: Path, prefix: str, subprocess_env: dict[str, str]
) -> None:
    result = cli(
        "send",
        "hello",
        "--wait",
        "--config",
        str(write_config(tmp_path, prefix)),
        env=cli_env(tmp_path, subprocess_env),
    )
    assert result.returncode == 4
    assert "no embedded server is running" in result.stderr
    assert "agent-runtime up" in result.stderr


def test_send_times_out_with_exit_3(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix)  # no workers run for this prefix
    result = cli(
        "send",
        "anyone?",
        "--wait",
        "--timeout",
        "0.5",
        "--config",
        str(config),
        "--redis-url",
        redis_url,
        env=subprocess_env,
    )
    assert result.returncode == 3  # the README's exit status for a request that timed out
    assert "no reply to request" in result.stderr and "within 0.5s" in result.stderr


@pytest.mark.anyio
async def test_send_wait_json_gets_the_reply(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix)
    async with Supervisor(config, redis_url, env=subprocess_env, log_dir=tmp_path) as sup:
        await sup.wait_ready(60)
        result = await anyio.run_process(
            [
                CLI,
                "send",
                "hello json",
                "--wait",
                "--json",
                "--timeout",
                "30",
                "--config",
                str(config),
                "--redis-url",
                redis_url,
            ],
            env=subprocess_env,
            cwd=ROOT,
            check=False,
        )
        no_wait = await anyio.run_process(
            [
                CLI,
                "send",
                "fire and forget",
                "--json",
                "--config",
                str(config),
                "--redis-url",
                redis_url,
            ],
            env=subprocess_env,
            cwd=ROOT,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    reply = json.loads(result.stdout)
    assert reply["message_type"] == "test.reply"
    assert reply["from_agent"] == "sink"
    assert reply["payload"] == {"text": "HELLO JSON"}
    assert re.fullmatch(r"[0-9a-f-]{36}", reply["correlation_id"])
    assert no_wait.returncode == 0
    assert set(json.loads(no_wait.stdout)) == {"correlation_id"}


def test_up_with_redis_url(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix)
    env = cli_env(tmp_path, subprocess_env)
    out = tmp_path / "up.out"
    with out.open("w") as sink:
        up = subprocess.Popen(
            [CLI, "up", "--config", str(config), "--redis-url", redis_url, "--replicas", "echo=2"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "workers ready" in out.read_text() or up.poll() is not None,
            60,
            message="up to report ready",
        )
        text = out.read_text()
        assert f"redis: {redis_url}" in text
        pids = [int(p) for p in re.findall(r"^(?:echo|sink)\s+\d+\s+(\d+)\s", text, re.M)]
        assert len(pids) == 3, text
        sent = cli(
            "send", "via up", "--wait", "--config", str(config), "--redis-url", redis_url, env=env
        )
        assert sent.returncode == 0, sent.stderr
        assert "text: VIA UP" in sent.stdout
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, out.read_text()
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
