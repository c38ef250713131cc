"""Messages an agent schedules for itself: a timer kept in Redis, not a message held pending.

An agent calls ``await runtime.timers.at(due, runtime.timers.name(ctx.message, payload))``:
the message it will receive at ``due`` (on the Redis server's clock) is entered in its type's
schedule (``P:schedule:AGENT``, a sorted set, score = due time in ms, member =
:class:`Scheduled` as canonical JSON). Every worker of that type runs the schedule sweep
(agent_runtime/worker/schedule.py): when a member is due it is claimed with a lease, its
message is published to the agent's inbox (signed by the worker's codec, ``from_agent``
``schedule``, a ``published`` trace record), and only then removed. Nothing is pending in
the meantime, so a request waiting for a timer holds no worker slot and no stream entry, and
``timers.cancel(name)`` removes a timer that is no longer needed.

The message id is derived from the member: a member fired twice (a sweeper died after
publishing, before removing it) is one message to the consumer's de-duplication.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agent_runtime.limits import too_deep
from protocols.base import Payload
from protocols.envelope import OUTPUT_ID_NAMESPACE, AgentMessage

if TYPE_CHECKING:
    from agent_runtime.transport.base import Schedule

#: ``from_agent`` of the messages the schedule sweep publishes.
SCHEDULE_AGENT = "schedule"
#: A member longer than this is not parsed (dropped by the sweep, logged).
MAX_MEMBER_BYTES = 64 * 1024


class Scheduled(BaseModel):
    """One scheduled message: the envelope fields it will be published with, except its
    id (derived from this), sender (``schedule``) and timestamp (the server's time then)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    to_agent: str = Field(max_length=64)
    message_type: str = Field(max_length=128)
    schema_version: int = Field(ge=1, le=10_000)
    payload: dict[str, Any]
    deadline: AwareDatetime | None = None
    hops: int = Field(default=0, ge=0, le=1_000)
    reply_to: str | None = Field(default=None, max_length=512)
    budget_usd: float | None = Field(default=None, ge=0)

    @classmethod
    def answering(cls, message: AgentMessage, to: str, payload: Payload) -> Scheduled:
        """``payload`` for agent ``to``, in the request of ``message`` (caused by it)."""
        return cls(
            correlation_id=message.correlation_id,
            causation_id=message.message_id,
            to_agent=to,
            message_type=payload.message_type,
            schema_version=payload.schema_version,
            payload=payload.model_dump(mode="json"),
            deadline=message.deadline,
            hops=min(message.hops + 1, 1_000),
            reply_to=message.reply_to,
            budget_usd=message.budget_usd,
        )

    def member(self) -> bytes:
        """The canonical JSON the schedule stores (same spec, same bytes)."""
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Scheduled | None:
        """The member ``raw`` (anyone can ZADD to the set: capped, depth-checked, validated),
        or None when it is not one."""
        if len(raw) > MAX_MEMBER_BYTES or too_deep(raw):
            return None
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, ValueError, RecursionError):
            return None

    def message(self, now: datetime, member: bytes) -> AgentMessage:
        """The envelope to publish at ``now`` (its id derived from ``member``). Raises
        ``ValidationError`` when the fields make no valid envelope."""
        digest = hashlib.sha256(member).hexdigest()
        return AgentMessage(
            message_id=uuid.uuid5(OUTPUT_ID_NAMESPACE, f"schedule:{digest}"),
            from_agent=SCHEDULE_AGENT,
            timestamp=now,
            **self.model_dump(),
        )


class Timers:
    """An agent type's timers (``runtime.timers``): messages to itself at a due time."""

    def __init__(self, schedule: Schedule, agent: str) -> None:
        self.schedule = schedule
        self.agent = agent

    def name(self, message: AgentMessage, payload: Payload) -> str:
        """The timer that delivers ``payload`` to this agent type in the request of
        ``message`` (pure: the same arguments, the same name)."""
        return Scheduled.answering(message, self.agent, payload).member().decode()

    async def at(self, due: datetime, name: str) -> None:
        """Start timer ``name`` (:meth:`name`) for ``due`` on the server's clock. Idempotent:
        starting it again (a redelivered message) changes nothing."""
        await self.schedule.add(self.agent, name.encode(), int(due.timestamp() * 1000))

    async def cancel(self, name: str) -> None:
        """Remove a timer (nothing happens if it already fired or never existed)."""
        await self.schedule.remove(self.agent, name.encode())
