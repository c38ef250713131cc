"""The container health check (deploy/docker/healthcheck.sh, the image's HEALTHCHECK: GET
/healthz, or /readyz, on the worker's metrics port) against a real worker process started as
the image starts it: unhealthy before it runs, healthy and ready while it runs, unhealthy once
it stopped -- on a single server and on the local Redis Cluster (readiness reads the group
there)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent_runtime.testing import WorkerProcess, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.sh"


@pytest.fixture(params=["single", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    fixture = "redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(fixture))


def _healthcheck(env: dict[str, str], path: str = "/healthz") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), path],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthcheck_follows_the_worker_heartbeat(
    tmp_path: Path, prefix: str, backend_url: str, subprocess_env: dict[str, str]
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "key_prefix": prefix,
                "allowed_modules": ["tests.fixtures"],
                "worker": {"heartbeat_interval": 0.5, "block_ms": 200, "drain_timeout": 2},
                "agents": {
                    "echo": {"class": "tests.fixtures.agents:Echo"},
                    "sink": {"class": "tests.fixtures.agents:Sink"},
                },
            }
        )
    )
    env = {
        **subprocess_env,
        "AGENT_RUNTIME_AGENT": "echo",
        "AGENT_RUNTIME_CONFIG": str(config),
        "AGENT_RUNTIME_REDIS_URL": backend_url,
        "AGENT_RUNTIME_METRICS_PORT": str(_free_port()),
        "AGENT_RUNTIME_READINESS_INTERVAL": "0.2",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    assert _healthcheck(env).returncode == 1, "no worker yet: unhealthy"

    # the worker as the image starts it: NAME only, config and URL from the environment
    worker = WorkerProcess(
        "echo", config=config, redis_url=backend_url, env=env, log_path=tmp_path / "echo.log"
    )
    worker.argv = [sys.executable, "-m", "agent_runtime", "worker", "echo"]
    worker.start()
    try:
        wait_until(
            lambda: _healthcheck(env, "/readyz").returncode == 0 or not worker.alive(),
            60,
            interval=0.2,
            message="the worker ready (Redis reachable, its group there)",
        )
        assert worker.alive(), (tmp_path / "echo.log").read_text()
        result = _healthcheck(env)
        assert result.returncode == 0 and "200 OK: ok" in result.stdout
    finally:
        assert worker.stop(15) == 0
    result = _healthcheck(env)
    assert result.returncode == 1 and "nothing listens" in result.stderr
