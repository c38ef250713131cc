"""Test support shipped for users who write agents and pipelines.

* :class:`AgentHarness` runs one agent's handler on a payload, no Redis needed, and returns
  what it sent -- the unit-test harness for a new agent type.
* :class:`WorkerProcess` starts a real ``agent-runtime worker`` process (argv only) and
  waits for its first heartbeat (:meth:`WorkerProcess.wait_ready`).
* :func:`wait_until` polls a condition with a deadline (never a bare sleep).
* :class:`TestPipeline` runs a whole pipeline in this process on the in-memory transport
  (agent_runtime/inprocess.py): end-to-end tests of your agents in milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel

from agent_runtime.agent import Agent, MessageContext, Output, Services
from agent_runtime.config.routing import Routing
from agent_runtime.inprocess import TestPipeline as TestPipeline  # re-exported: the user API
from agent_runtime.signing import ensure_keyring
from agent_runtime.transport.base import State
from agent_runtime.transport.inspect import HeartbeatProbe, SupportsExists
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.worker.loop import default_consumer_name
from protocols.base import Payload
from protocols.envelope import AgentMessage, utcnow

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class AgentHarness:
    """Run ``agent_cls`` handlers in-process: ``outputs = await harness.handle(payload)``."""

    agent_cls: type[Agent[Any]]
    config: Mapping[str, Any] = field(default_factory=dict)
    routes: Mapping[str, str] = field(default_factory=dict)
    state: State = field(default_factory=lambda: MemoryTransport().state)
    services: Services = field(default_factory=Services)
    name: str = "agent_under_test"

    def __post_init__(self) -> None:
        keys = Keys("test")
        table = {m.message_type: "next" for m in self.agent_cls.produces}
        table.update(self.routes)
        self.routing = Routing(keys, table)
        runtime = self.services.runtime(
            self.name, keys, self.routing, self.state, structlog.get_logger()
        )
        config: BaseModel = self.agent_cls.Config.model_validate(dict(self.config))
        self.agent = self.agent_cls(config, runtime)

    async def handle(
        self, payload: Payload, *, delivery_count: int = 1, message: AgentMessage | None = None
    ) -> list[Output]:
        message = message or self.message_for(payload)
        ctx = MessageContext(
            agent=self.name,
            message=message,
            payload=payload,
            stream="test:inbox",
            entry_id=b"0-1",
            delivery_count=delivery_count,
            routing=self.routing,
            log=structlog.get_logger(),
        )
        await self.agent.handle(ctx)
        return ctx.outputs

    def message_for(self, payload: Payload, **overrides: Any) -> AgentMessage:
        cid = uuid.uuid4()
        fields: dict[str, Any] = dict(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="test",
            to_agent=self.name,
            message_type=payload.message_type,
            schema_version=payload.schema_version,
            payload=payload.model_dump(mode="json"),
            timestamp=utcnow(),
            reply_to=f"test:reply:{{{cid}}}",
        )
        fields.update(overrides)
        return AgentMessage(**fields)


class WorkerProcess:
    """``python -m agent_runtime worker NAME`` as a child process."""

    def __init__(
        self,
        agent: str,
        *,
        config: str | Path,
        redis_url: str,
        slot: str = "0",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.agent = agent
        self.slot = slot
        self.argv = [
            sys.executable,
            "-m",
            "agent_runtime",
            "worker",
            agent,
            "--slot",
            slot,
            "--config",
            str(config),
            "--redis-url",
            redis_url,
        ]
        self.env = dict(env if env is not None else os.environ)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        ensure_keyring(self.env)  # as 'up' does: the runtime directory's key, made if missing
        if self.log_path is None:
            self.process = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            return self
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self, redis: SupportsExists, keys: Keys, timeout: float = 20.0) -> WorkerProcess:
        """Wait until the worker's heartbeat key exists; AssertionError (with the worker's log)
        if the process exits first, or if no heartbeat comes within ``timeout`` seconds."""
        probe = HeartbeatProbe(redis, keys)
        consumer = default_consumer_name(self.agent, self.slot)
        wait_until(
            lambda: probe.live(self.agent, consumer) or not self.alive(),
            timeout,
            message=f"{self.agent} heartbeat",
        )
        if not self.alive():
            raise AssertionError(self.log_path.read_text() if self.log_path else "worker exited")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if not self.alive():
            return self.process.returncode if self.process else None
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
