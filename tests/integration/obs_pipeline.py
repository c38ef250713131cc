"""A small echo -> sink pipeline with real worker processes, for the observability tests
(trace, status, dlq, health): config file, worker start/stop, publishing, CLI runner."""

from __future__ import annotations

import contextlib
import io
import json
import socket
from pathlib import Path
from typing import Any

import anyio
import redis
import yaml

from agent_runtime.cli import main
from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess
from protocols.envelope import AgentMessage

FAST = {
    "reclaim_idle": 1.0,
    "reclaim_interval": 0.2,
    "lease_interval": 0.25,
    "retry_backoff": 0.05,
    "retry_backoff_max": 0.2,
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "max_deliveries": 2,
    "drain_timeout": 5,
}


class EchoPipeline:
    def __init__(
        self,
        tmp: Path,
        url: str,
        prefix: str,
        env: dict[str, str],
        echo: dict[str, Any] | None = None,
    ) -> None:
        self.tmp, self.url, self.prefix, self.env = tmp, url, prefix, env
        self.config_path = tmp / "pipeline.yaml"
        self.write_config(echo or {})
        self.r = redis.Redis.from_url(url)
        self.workers: dict[tuple[str, str], WorkerProcess] = {}

    def write_config(self, echo: dict[str, Any]) -> None:
        config = {
            "key_prefix": self.prefix,
            "allowed_modules": ["tests.fixtures"],
            "worker": FAST,
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo", "config": echo},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.pipeline = Pipeline.load(self.config_path)
        self.keys = self.pipeline.config.keys

    def consumer(self, agent: str, slot: str = "0") -> str:
        return f"{agent}-{socket.gethostname()}-{slot}"

    def start(self, agent: str, slot: str = "0", **env: str) -> WorkerProcess:
        log = self.tmp / f"{agent}-{slot}.log"
        proc = WorkerProcess(
            agent,
            config=self.config_path,
            redis_url=self.url,
            slot=slot,
            env={**self.env, **env},
            log_path=log,
        ).start()
        self.workers[(agent, slot)] = proc
        return proc.wait_ready(self.r, self.keys)

    def stop(self, agent: str, slot: str = "0") -> None:
        proc = self.workers.pop((agent, slot))
        assert proc.stop(15) == 0

    def publish(self, text: str) -> AgentMessage:
        async def go() -> AgentMessage:
            async with Client.connect(self.url, self.pipeline) as client:
                return await client.publish(text)

        return anyio.run(go)

    def replies(self, message: AgentMessage) -> list[dict[str, Any]]:
        assert message.reply_to is not None
        return [json.loads(f[b"m"])["payload"] for _id, f in self.r.xrange(message.reply_to)]

    def cli(self, *args: str) -> tuple[int, str]:
        """Run ``agent-runtime ARGS --config C --redis-url U`` in-process: (exit code, stdout)."""
        out = io.StringIO()
        argv = [*args, "--config", str(self.config_path), "--redis-url", self.url]
        with contextlib.redirect_stdout(out):
            code = main(argv)
        return code, out.getvalue()

    def cli_json(self, *args: str) -> Any:
        code, out = self.cli(*args, "--json")
        assert code == 0, out
        return json.loads(out)

    def close(self) -> None:
        for proc in self.workers.values():
            proc.stop(15)
        self.r.close()
