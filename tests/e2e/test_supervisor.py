"""The Supervisor with real worker processes on the session's embedded server: spawn, readiness,
restart after SIGKILL (the pipeline keeps answering), clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
import yaml

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import ConfigError
from agent_runtime.worker.supervisor import SupervisedWorker, Supervisor, WorkersNotReady

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FAST = {
    "block_ms": 100,
    "heartbeat_interval": 0.2,
    "reclaim_idle": 1.0,
    "reclaim_interval": 0.2,
    "lease_interval": 0.25,
    "retry_backoff": 0.05,
    "drain_timeout": 2,
}


def write_config(tmp: Path, prefix: str, *, echo_replicas: int = 2) -> Path:
    config = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "worker": FAST,
        "agents": {
            "echo": {"class": "tests.fixtures.agents:Echo", "replicas": echo_replicas},
            "sink": {"class": "tests.fixtures.agents:Sink"},
        },
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def ask(client: Client, text: str) -> str:
    reply = await client.request(text, timeout=30)
    assert reply.message.message_type == "test.reply"
    return str(reply.payload.model_dump()["text"])


async def wait_for_new_pid(sup: Supervisor, agent: str, slot: int, old: int) -> SupervisedWorker:
    with anyio.fail_after(30):
        while True:
            proc = next(p for p in sup.processes() if (p.agent, p.slot) == (agent, slot))
            if proc.pid is not None and proc.pid != old:
                return proc
            await anyio.sleep(0.05)


async def test_spawns_replicas_and_answers(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix)
    sup = Supervisor(
        config, redis_url, env=subprocess_env, log_dir=tmp_path / "logs", restart_backoff=0.05
    )
    async with sup:
        await sup.wait_ready(60)
        procs = sup.processes()
        assert sorted((p.agent, p.slot) for p in procs) == [("echo", 0), ("echo", 1), ("sink", 0)]
        assert all(p.pid is not None and alive(p.pid) and p.restarts == 0 for p in procs)
        async with Client.connect(redis_url, Pipeline.load(config)) as client:
            assert await ask(client, "hello") == "HELLO"
    pids = [p.pid for p in procs if p.pid is not None]
    assert not any(alive(pid) for pid in pids), "workers must be stopped on exit"
    assert (tmp_path / "logs" / "echo-1.log").exists()


async def test_restarts_a_killed_worker(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix, echo_replicas=1)
    sup = Supervisor(
        config, redis_url, env=subprocess_env, log_dir=tmp_path / "logs", restart_backoff=0.05
    )
    async with sup, Client.connect(redis_url, Pipeline.load(config)) as client:
        await sup.wait_ready(60)
        old = next(p for p in sup.processes() if p.agent == "echo")
        assert old.pid is not None
        os.kill(old.pid, signal.SIGKILL)

        new = await wait_for_new_pid(sup, "echo", 0, old.pid)
        assert new.restarts == 1
        await sup.wait_ready(60)  # the heartbeat must name the new pid, not the killed one
        assert await ask(client, "after the crash") == "AFTER THE CRASH"


async def test_replicas_override(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix, echo_replicas=1)
    sup = Supervisor(config, redis_url, replicas={"echo": 0}, env=subprocess_env)
    assert [(p.agent, p.slot) for p in sup.processes()] == [("sink", 0)]
    with pytest.raises(ConfigError, match="unknown agent type 'nope'"):
        Supervisor(config, redis_url, replicas={"nope": 1})


async def test_errors_of_the_body_propagate_unwrapped(
    tmp_path: Path, prefix: str, redis_url: str
) -> None:
    config = write_config(tmp_path, prefix, echo_replicas=0)
    with pytest.raises(LookupError, match="from the body"):
        async with Supervisor(config, redis_url, replicas={"sink": 0}):
            raise LookupError("from the body")


async def test_wait_ready_names_workers_that_keep_crashing(
    tmp_path: Path, prefix: str, redis_url: str, subprocess_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, prefix, echo_replicas=1)
    broken = {**subprocess_env, "PYTHONHOME": str(tmp_path / "no-python-here")}
    sup = Supervisor(config, redis_url, env=broken, log_dir=tmp_path / "logs", restart_backoff=0.05)
    async with sup:
        with anyio.fail_after(30):  # until each child has crashed at least once
            while not all(c.exits for c in sup._children):
                await anyio.sleep(0.05)
        with pytest.raises(WorkersNotReady, match=r"echo\[0\] \(exited \d+x, last code 1\)"):
            await sup.wait_ready(0.2)
