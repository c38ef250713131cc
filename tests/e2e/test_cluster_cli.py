"""``agent-runtime redis --cluster 3``: prints a working cluster URL, stops on SIGTERM and
takes its nodes with it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.e2e


def test_redis_command_runs_a_cluster_until_sigterm(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "AGENT_RUNTIME_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_runtime",
            "redis",
            "--cluster",
            "3",
            "--dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("redis+cluster://127.0.0.1:"), url
        host, port = url.removeprefix("redis+cluster://").split(":")
        client = redis.RedisCluster(host=host, port=int(port))
        try:
            assert client.cluster_info()["cluster_state"] == "ok"
            assert len(client.get_primaries()) == 3
            for i in range(30):  # keys of every slot range are writable
                client.set(f"k{i}", i)
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    gone = redis.Redis(host=host, port=int(port), socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        gone.ping()
    gone.close()
    assert not (tmp_path / "home" / "server.json").exists(), "its discovery record is removed"
