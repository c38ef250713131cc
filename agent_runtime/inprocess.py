"""A whole pipeline in one process, on the in-memory transport: :class:`TestPipeline`.

Why: a user who writes agents wants to test them end to end -- routing, outputs, replies,
dead letters, the failure reply a requester gets -- without a Redis server or worker
processes, in milliseconds. Each agent type gets one in-process
:class:`~agent_runtime.worker.loop.Worker`, built as ``agent-runtime worker`` builds it
(agent_runtime/cli/worker.py: the signing codec, the agent's resilience policies as
middleware, the same extras), on a :class:`~agent_runtime.transport.memory.MemoryBus`; the
requester is a real :class:`~agent_runtime.client.Client` on the same in-memory store. So the
code under test is the production path; only the transport differs (held to the same
contract: tests/contract/test_transport_contract.py). Compare FastStream's
``TestRedisBroker`` and dramatiq's ``StubBroker``.

Import it from :mod:`agent_runtime.testing`::

    async with TestPipeline("pipeline.yaml") as tp:
        reply = await tp.request("some text", timeout=5)

What needs real processes (SIGKILL, SIGTERM, reclaim across processes, Cluster) stays in the
subprocess e2e tests.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import anyio

from agent_runtime.approval import PRIVATE_KEY_ENV, generate_pair
from agent_runtime.client import Client
from agent_runtime.codec import Decoded
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import RequestTimeout
from agent_runtime.signing import ensure_keyring
from agent_runtime.transport.memory import ManualClock, MemoryTransport
from agent_runtime.worker.build import build_worker
from agent_runtime.worker.delivery import expand_trace
from agent_runtime.worker.loop import Worker
from protocols.base import Payload
from protocols.envelope import AgentMessage


class TestPipeline:
    """Runs ``config`` (a Pipeline, or the path of its YAML) in this process; an async
    context manager. Inside: :meth:`request` (publish + wait for the reply),
    :meth:`publish`/:meth:`wait_reply` separately, :meth:`trace` and :meth:`dead_letters`;
    ``client``, ``workers`` and ``transport`` for anything else. On exit the workers drain
    and stop (a worker that crashed re-raises its error there).

    One worker per agent type, whatever its ``replicas``. Without an approval key pair in the
    environment (``AGENT_RUNTIME_APPROVAL_PRIVATE_KEY``/``_PUBLIC_KEY``: the safety checker
    signs, executors verify) a fresh pair is set for the pipeline's lifetime (one process:
    every agent of it can read both; real separation needs worker processes). Envelopes are
    signed as in production (unless ``signing: off``): without a key, one is created in the
    runtime directory.

    ``clock``: a :class:`ManualClock` shared by the store (TTLs, idle times, the server
    clock the runtime reads); the default is the wall clock."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, config: Pipeline | str | Path, *, clock: ManualClock | None = None) -> None:
        self.pipeline = config if isinstance(config, Pipeline) else Pipeline.load(config)
        if self.pipeline.config.signing:  # as 'up' does: the runtime directory's key
            ensure_keyring()
        self.transport = MemoryTransport(clock, self.pipeline.config.keys)
        self.redis = self.transport.redis
        self.keys = self.pipeline.config.keys
        self.client = Client(self.redis, self.pipeline)
        self.workers: dict[str, Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._env_keys: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> TestPipeline:
        if not os.environ.get(PRIVATE_KEY_ENV):  # safety checker signs, executors verify
            self._env_keys = generate_pair()  # one process: every agent sees both keys
            os.environ.update(self._env_keys)
        try:
            for name in self.pipeline.agents:
                self.workers[name] = self._worker(name)
        except BaseException:
            self._restore_env()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(w.run(), name=f"worker:{n}") for n, w in self.workers.items()
        ]
        return self

    def _worker(self, name: str) -> Worker:
        """One agent type's worker, built by the composition root like every worker."""
        return build_worker(
            self.pipeline,
            name,
            self.redis,
            consumer=f"{name}-inprocess-0",
            transport=self.transport,
        ).worker

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every worker (drain, flush commits), close the client."""
        for worker in self.workers.values():
            worker.stop()
        self.transport.store.interrupt()  # blocked reads return now, not after block_ms
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.client.aclose()
        self._restore_env()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and not isinstance(errors[0], asyncio.CancelledError):
            raise errors[0]

    def _restore_env(self) -> None:
        """Remove the approval keys this pipeline set (ones it found stay)."""
        for name, value in self._env_keys.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        self._env_keys = {}

    # ------------------------------------------------------------------ requests
    async def publish(self, text_or_payload: str | Payload, **options: Any) -> AgentMessage:
        """Publish a request as :meth:`Client.publish` does; returns its envelope."""
        self._check_running()
        return await self.client.publish(text_or_payload, **options)

    async def wait_reply(self, message: AgentMessage, timeout: float = 10.0) -> Decoded:
        """The first decodable reply to ``message`` (its answer or the runtime's
        ``request.failed``), or RequestTimeout after ``timeout`` seconds."""
        assert message.reply_to is not None
        store = self.transport.store
        with anyio.move_on_after(timeout):
            while True:
                self._check_running()
                for _id, fields in await self.redis.xrange(message.reply_to):
                    try:
                        return self.client.codec.decode(fields, message.reply_to)
                    except Exception:  # noqa: S112 - not a reply: the reader skips it too
                        continue
                await store.wait_written(timeout)
        raise RequestTimeout(f"no reply for request {message.correlation_id} within {timeout}s")

    async def request(
        self, text_or_payload: str | Payload, *, timeout: float = 10.0, **options: Any
    ) -> Decoded:
        """Publish and wait for the reply; ``timeout`` is also the request's deadline."""
        message = await self.publish(text_or_payload, timeout=timeout, **options)
        return await self.wait_reply(message, timeout)

    def _check_running(self) -> None:
        """A crashed worker fails the test now, not as a timeout."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"{task.get_name()} crashed") from task.exception()

    # ------------------------------------------------------------------ what happened
    async def trace(self, correlation_id: str) -> list[dict[str, str]]:
        """The request's trace records (published, handled, dead-lettered...), in order."""
        records = await self.redis.lrange(self.keys.trace(str(correlation_id)), 0, -1)
        return [
            {k.decode(): v.decode() for k, v in expand_trace(record).items()} for record in records
        ]

    async def dead_letters(self, agent: str | None = None) -> list[dict[str, str]]:
        """Dead-letter entries (reason, error, original fields...) of ``agent``, or of all."""
        agents = [agent] if agent else list(self.pipeline.agents)
        out = []
        for name in agents:
            for _id, fields in await self.redis.xrange(self.keys.dlq(name)):
                out.append({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
        return out
