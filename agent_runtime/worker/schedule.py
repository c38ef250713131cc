"""The schedule sweep: publishes the messages an agent type scheduled for itself when they are
due on the Redis server's clock (agent_runtime/schedule.py says what is scheduled).

Every worker runs :class:`ScheduleSweep` beside its consume loop, on its own agent type's set
``P:schedule:AGENT``. About every ``requests.sweep_interval`` seconds one script claims the
due members (a lease of :data:`LEASE_MS`: concurrent sweepers never take the same member),
then, per member, the message is published to the agent's inbox (XADD + ``published`` trace
record) and the member removed only after that (transport/schedule.py). A sweeper that dies
in between leaves the member to fire again when the lease ends: the same message id, dropped
by de-duplication. A member that is no valid scheduled message (anyone with write access can
ZADD) is dropped and logged, never retried.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from pydantic import ValidationError

from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.policies.clock import RedisClock
from agent_runtime.schedule import SCHEDULE_AGENT, Scheduled
from agent_runtime.transport.base import Transport
from agent_runtime.transport.commit import Publication
from agent_runtime.worker.sweep import MAX_BACKOFF, _jittered
from protocols.envelope import AgentMessage

if TYPE_CHECKING:
    from agent_runtime.worker.loop import Worker

#: How long a claimed member is kept from other sweepers (ms): far longer than a publish.
LEASE_MS = 30_000


class ScheduleSweep:
    """One worker's share of its agent type's schedule. ``await run(stopping)``."""

    def __init__(
        self,
        transport: Transport,
        pipeline: Pipeline,
        codec: Codec,
        agent: str,
        *,
        log: Any = None,
    ) -> None:
        self.transport = transport
        self.schedule = transport.schedule
        self.pipeline = pipeline
        self.codec = codec
        self.agent = agent
        self.settings = pipeline.config.requests
        self.clock = RedisClock(transport.clock)
        self.log = log or structlog.get_logger("agent_runtime.worker.schedule")
        self.fired = 0  # messages published by this process (tests, metrics)

    @classmethod
    def for_worker(cls, worker: Worker) -> ScheduleSweep:
        return cls(worker.transport, worker.pipeline, worker.codec, worker.name, log=worker.log)

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until ``stopping`` is set; a failed round is logged and retried after a
        jittered back-off (the claimed members fire when their lease ends, here or elsewhere)."""
        interval = backoff = self.settings.sweep_interval
        while not stopping.is_set():
            try:
                handled = await self.sweep_once()
            except Exception as exc:
                self.log.warning("schedule_sweep_failed", error=repr(exc), retry_in=backoff)
                await anyio.sleep(_jittered(backoff))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = interval
            if handled < self.settings.sweep_batch:
                await anyio.sleep(_jittered(interval))

    async def sweep_once(self) -> int:
        """One round: claim the due members and fire each; returns how many were claimed."""
        now_ms = int(await self.clock.now() * 1000)
        lease = now_ms + LEASE_MS
        claimed = await self.schedule.claim(self.agent, now_ms, lease, self.settings.sweep_batch)
        for member in claimed:
            await self.fire(member, now_ms, lease)
        return len(claimed)

    async def fire(self, member: bytes, now_ms: int, lease: int) -> None:
        """Publish the member's message, then remove the member (a bad member: removed)."""
        message = self.message_of(member, now_ms)
        if message is not None:
            await self.transport.publisher.publish(
                self.publication(message), label=f"scheduled {message.message_type}"
            )
            self.fired += 1
            self.log.info(
                "scheduled_message_published",
                correlation_id=message.correlation_text,
                message_id=message.id_text,
                message_type=message.message_type,
            )
        await self.schedule.settle(self.agent, member, lease)

    def message_of(self, member: bytes, now_ms: int) -> AgentMessage | None:
        spec = Scheduled.parse(member)
        if spec is None or spec.to_agent != self.agent:
            head = member[:200].decode("utf-8", "replace")
            self.log.warning("scheduled_member_dropped", member=head)
            return None
        now = _datetime(now_ms)
        try:
            return spec.message(now, member)
        except ValidationError as exc:
            self.log.warning("scheduled_member_dropped", error=str(exc)[:500])
            return None

    def publication(self, message: AgentMessage) -> Publication:
        stream = self.pipeline.routing.stream_for(self.agent, message.correlation_id)
        settings = self.pipeline.worker_settings(self.agent)
        trace = None
        if settings.trace:
            record = json.dumps(_published_record(message), ensure_ascii=False).encode()
            key = self.pipeline.config.keys.trace(message.correlation_text)
            trace = (key, settings.trace_ttl, record)
        return Publication(stream, self.codec.encode(message, stream), trace=trace)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _published_record(message: AgentMessage) -> dict[str, Any]:
    """The trace record of a scheduled message (as the client's ``published`` record)."""
    now_ms = int(message.timestamp.timestamp() * 1000)
    return {
        "agent": SCHEDULE_AGENT,
        "outcome": "published",
        "message_id": message.id_text,
        "correlation_id": message.correlation_text,
        "message_type": message.message_type,
        "from_agent": SCHEDULE_AGENT,
        "to_agent": message.to_agent,
        "started_ms": now_ms,
        "finished_ms": now_ms,
        "duration_ms": 0,
        "delivery_count": 0,
    }
