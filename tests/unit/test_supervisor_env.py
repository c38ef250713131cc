"""What the Supervisor hands its children, without starting any: argv only, credentials kept
off the command line, distinct metrics ports, importable working directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent_runtime.errors import ConfigError
from agent_runtime.worker.supervisor import Supervisor, _Child

CONFIG = """\
key_prefix: unit
allowed_modules: [tests.fixtures]
agents:
  echo: {class: "tests.fixtures.agents:Echo", replicas: 2}
  sink: {class: "tests.fixtures.agents:Sink"}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    return path


def child(sup: Supervisor, agent: str, slot: int) -> _Child:
    return next(c for c in sup._children if (c.agent, c.slot) == (agent, slot))


def test_argv_runs_one_worker_per_replica(config: Path) -> None:
    sup = Supervisor(config, "unix:///tmp/redis.sock")
    assert [(p.agent, p.slot, p.pid) for p in sup.processes()] == [
        ("echo", 0, None),
        ("echo", 1, None),
        ("sink", 0, None),
    ]
    assert sup._argv(child(sup, "echo", 1)) == [
        sys.executable,
        "-m",
        "agent_runtime",
        "worker",
        "echo",
        "--slot",
        "1",
        "--config",
        str(config),
        "--redis-url",
        "unix:///tmp/redis.sock",
    ]


def test_credentials_travel_in_the_environment_not_argv(config: Path) -> None:
    url = "redis://user:s3cret@redis.example:6379/0"
    sup = Supervisor(config, url)
    argv = sup._argv(child(sup, "sink", 0))
    assert not any("s3cret" in arg for arg in argv)
    assert sup._child_env(child(sup, "sink", 0))["AGENT_RUNTIME_REDIS_URL"] == url


def test_children_get_distinct_metrics_ports_and_indexes(config: Path) -> None:
    sup = Supervisor(config, "unix:///x", env={"AGENT_RUNTIME_METRICS_PORT": "9100"})
    assert [sup.metrics_port(p.agent, p.slot) for p in sup.processes()] == [9100, 9101, 9102]
    envs = [sup._child_env(c) for c in sup._children]
    assert [e["AGENT_RUNTIME_WORKER_INDEX"] for e in envs] == ["0", "1", "2"]
    unset = Supervisor(config, "unix:///x", env={"AGENT_RUNTIME_METRICS_PORT": ""})
    assert unset.metrics_port("echo", 0) is None


def test_pythonpath_includes_the_working_directory(config: Path) -> None:
    env = Supervisor(config, "unix:///x", env={"PYTHONPATH": "/opt/extra"})._env
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts[0] == "/opt/extra"
    assert str(Path.cwd()) in parts


def test_restart_backoff_doubles_and_resets_after_a_stable_run(config: Path) -> None:
    sup = Supervisor(config, "unix:///x", restart_backoff=0.5, max_backoff=3.0)
    delays = []
    delay = 0.0
    for _ in range(5):
        delay = sup._next_backoff(delay, lived=1.0)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sup._next_backoff(3.0, lived=31.0) == 0.5


def test_bad_replica_override(config: Path) -> None:
    with pytest.raises(ConfigError, match="must be >= 0"):
        Supervisor(config, "unix:///x", replicas={"echo": -1})


def test_each_child_is_told_its_supervisor_pid(config: Path) -> None:
    """The child asks for PR_SET_PDEATHSIG itself (die_with_supervisor) and compares its
    parent with this pid: Popen gets no preexec_fn, so subprocess can vfork."""
    from agent_runtime.worker.supervisor import SUPERVISOR_PID_ENV

    sup = Supervisor(config, "unix:///tmp/redis.sock")
    for c in sup._children:
        assert sup._child_env(c)[SUPERVISOR_PID_ENV] == str(os.getpid())
