"""Canary secrets placed in the environment, the config, the Redis URL and a payload never
appear in logs, dead letters, traces or operator reports (status, trace, dlq, health)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from agent_runtime.cli import main
from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer

pytestmark = pytest.mark.e2e


def canary(kind: str) -> str:
    return f"canary{kind}{uuid.uuid4().hex[:12]}"


def test_canary_secrets_never_leak(
    tmp_path: Path,
    redis_server: EmbeddedServer,
    prefix: str,
    subprocess_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_secret, config_secret, url_secret, payload_secret = (
        canary("env"),
        canary("cfg"),
        canary("url"),
        canary("pay"),
    )
    secrets = (env_secret, config_secret, url_secret, payload_secret)
    admin = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    user = f"u{prefix}"
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{url_secret}"], keys="*", channels="*", commands=["+@all"]
    )
    url = f"unix://{user}:{url_secret}@{redis_server.socket_path}"
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "redis_url": url,
                "key_prefix": prefix,
                "allowed_modules": ["tests.fixtures"],
                "worker": {
                    "max_deliveries": 2,
                    "retry_backoff": 0.05,
                    "block_ms": 200,
                    "heartbeat_interval": 0.5,
                },
                "agents": {
                    "leaky": {
                        "class": "tests.fixtures.secret_agents:Leaky",
                        "config": {"api_key": config_secret},
                    }
                },
            }
        )
    )
    env = {**subprocess_env, "PAYMENTS_API_TOKEN": env_secret, "AGENT_RUNTIME_LOG_LEVEL": "debug"}
    log_path = tmp_path / "leaky.log"
    with open(log_path, "wb") as out:
        worker = subprocess.Popen(  # the URL travels in the config file only
            [
                sys.executable,
                "-m",
                "agent_runtime",
                "worker",
                "leaky",
                "--config",
                str(config_path),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        pipeline = Pipeline.load(config_path)
        keys = pipeline.config.keys
        consumer = f"leaky-{socket.gethostname()}-0"
        wait_until(
            lambda: admin.exists(keys.heartbeat("leaky", consumer)) or worker.poll(),
            20,
            message="worker up",
        )
        assert worker.poll() is None, log_path.read_text()

        import anyio

        async def publish() -> str:
            async with Client.connect(url, pipeline) as client:
                text = f"deploy with password={payload_secret} and token {env_secret}"
                return str((await client.publish(text)).correlation_id)

        cid = anyio.run(publish)
        wait_until(lambda: admin.xlen(keys.dlq("leaky")), 20, message="dead letter")

        monkeypatch.delenv("AGENT_RUNTIME_REDIS_URL", raising=False)
        monkeypatch.setenv("PAYMENTS_API_TOKEN", env_secret)
        capsys.readouterr()
        cli = ["--config", str(config_path)]
        [letter_id] = [eid.decode() for eid, _ in admin.xrange(keys.dlq("leaky"))]
        for argv in (
            ["status"],
            ["status", "--json"],
            ["trace", cid],
            ["trace", cid, "--json"],
            ["dlq", "list"],
            ["dlq", "list", "--json"],
            ["dlq", "show", letter_id],
            ["dlq", "show", letter_id, "--json"],
            ["health"],
        ):
            main([*argv, *cli])
        reports = capsys.readouterr()
        assert "upstream rejected" in reports.out and cid in reports.out  # they did report
    finally:
        worker.terminate()
        worker.wait(20)

    logs = log_path.read_text()
    assert "calling_upstream" in logs and "upstream_config" in logs
    stored = json.dumps(
        [[str(f) for f in fields.items()] for _id, fields in admin.xrange(keys.dlq("leaky"))]
        + [str(record) for record in admin.lrange(keys.trace(cid), 0, -1)]
    )
    assert "upstream rejected" in stored and "leaky" in stored
    for secret in secrets:
        for where, text in (
            ("worker logs", logs),
            ("dead letters and trace", stored),
            ("command output", reports.out + reports.err),
        ):
            assert secret not in text, f"{secret[:9]}... leaked into {where}"
    admin.acl_deluser(user)
    admin.close()
    assert os.environ.get("PAYMENTS_API_TOKEN") == env_secret
