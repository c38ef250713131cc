"""The Agent base class, the services an agent gets (:class:`AgentRuntime`) and the
per-message :class:`MessageContext` a handler works with.

A handler never writes to Redis for its outputs: it calls ``ctx.send(...)``/``ctx.reply(...)``
and the worker writes every output of a message, its done marker and its XACK together, after
the handler returns. Output ids are deterministic, so a redelivered message reproduces the
same ids and downstream de-duplication drops the copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict

from agent_runtime.config.routing import Routing
from agent_runtime.errors import RoutingError
from agent_runtime.transport.keys import Keys
from protocols.base import Payload
from protocols.envelope import AgentMessage, utcnow

if TYPE_CHECKING:
    from agent_runtime.transport.base import LLMStore, State


#: Seconds a request's reply stream lives after its last write.
REPLY_TTL = 24 * 3600


class NoConfig(BaseModel):
    """The Config of an agent that takes no options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass
class AgentRuntime:
    """Services the runtime gives an agent instance: its name, key names, routing, the state
    API for agents that keep per-request state (``state``, keys from ``keys.request_state``;
    agent_runtime/transport/base.py ``State``), optional extras (LLM providers, tools) by
    name, and a bound logger."""

    name: str
    keys: Keys
    routing: Routing
    state: State
    log: Any = field(default_factory=structlog.get_logger)
    extras: dict[str, Any] = field(default_factory=dict)
    #: The LLM response cache and cost ledger (None: uncached, unbooked; e.g. AgentHarness).
    llm_store: LLMStore | None = None


class Agent(Generic[ConfigT]):
    """Base class of every agent type.

    Subclasses set ``Config`` (a pydantic model, checked against the YAML ``config:`` block),
    ``consumes`` (payload models it handles) and ``produces`` (payload models it emits), and
    implement :meth:`handle`. Fate is signalled by raising ``Retry``, ``Reject`` or ``Skip``
    (agent_runtime.errors); returning normally means success.
    """

    Config: ClassVar[type[BaseModel]] = NoConfig
    consumes: ClassVar[tuple[type[Payload], ...]] = ()
    produces: ClassVar[tuple[type[Payload], ...]] = ()
    #: Error types of this agent that retrying cannot fix: dead-lettered on the first delivery
    #: (besides the runtime's own list, agent_runtime/policies/errors.py PERMANENT_TYPES).
    permanent_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, config: ConfigT, runtime: AgentRuntime) -> None:
        self.config = config
        self.runtime = runtime

    async def start(self) -> None:
        """Called once in the worker process before the first message."""

    async def stop(self) -> None:
        """Called once when the worker drains and stops."""

    async def handle(self, ctx: MessageContext) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Output:
    """One message to write: the stream it goes to and the envelope."""

    stream: str
    message: AgentMessage
    ttl: int | None = None  # seconds; set on per-request streams (replies)
    maxlen: int | None = None  # XADD MAXLEN ~: only for streams no consumer group reads
    terminal: bool = False  # the request's terminal reply: written at most once per request


class MessageContext:
    """One delivery of one message to one handler."""

    __slots__ = (
        "_base_log",
        "_log",
        "_outputs",
        "agent",
        "delivery_count",
        "entry_id",
        "message",
        "payload",
        "routing",
        "stream",
    )

    def __init__(
        self,
        *,
        agent: str,
        message: AgentMessage,
        payload: Payload,
        stream: str,
        entry_id: bytes,
        delivery_count: int,
        routing: Routing,
        log: Any,
    ) -> None:
        self.agent = agent
        self.message = message
        self.payload = payload
        self.stream = stream
        self.entry_id = entry_id
        self.delivery_count = delivery_count
        self.routing = routing
        self._base_log = log
        self._log: Any = None
        self._outputs: list[Output] = []

    @property
    def log(self) -> Any:
        """A logger bound to this message's ids (bound on first use: the hot path stays lean)."""
        if self._log is None:
            message = self.message
            self._log = self._base_log.bind(
                correlation_id=str(message.correlation_id),
                message_id=str(message.message_id),
                causation_id=str(message.causation_id or ""),
                message_type=message.message_type,
                delivery_count=self.delivery_count,
            )
        return self._log

    @property
    def outputs(self) -> list[Output]:
        return self._outputs

    def send(
        self, payload: Payload, *, to: str | None = None, now: datetime | None = None
    ) -> AgentMessage:
        """Queue ``payload`` for agent ``to`` (default: the agent that consumes its type)."""
        target = to or self.routing.agent_for(payload.message_type)
        stream = self.routing.stream_for(target, self.message.correlation_id)
        return self._queue(stream, target, payload, now)

    def reply(self, payload: Payload, *, now: datetime | None = None) -> AgentMessage:
        """Queue ``payload`` on the request's reply stream (``reply_to``)."""
        if self.message.reply_to is None:
            raise RoutingError(f"message {self.message.message_id} has no reply_to stream")
        return self._queue(
            self.message.reply_to, "client", payload, now, ttl=REPLY_TTL, terminal=True
        )

    def send_to_stream(
        self,
        stream: str,
        payload: Payload,
        *,
        to_agent: str = "client",
        now: datetime | None = None,
        maxlen: int | None = None,
    ) -> AgentMessage:
        """Queue ``payload`` on an explicit stream (e.g. the shared reports stream).

        ``maxlen`` caps the stream at about that many entries (XADD MAXLEN ~). Only for
        streams that no consumer group reads: on Redis < 8.2 and Valkey, MAXLEN also drops
        entries still pending or not yet delivered to a group."""
        return self._queue(stream, to_agent, payload, now, maxlen=maxlen)

    def clear_outputs(self) -> None:
        """Forget queued outputs (used by retry policies before a fresh attempt)."""
        self._outputs.clear()

    def _queue(
        self,
        stream: str,
        to_agent: str,
        payload: Payload,
        now: datetime | None,
        ttl: int | None = None,
        maxlen: int | None = None,
        terminal: bool = False,
    ) -> AgentMessage:
        message = self.message.derive(
            index=len(self._outputs),
            from_agent=self.agent,
            to_agent=to_agent,
            message_type=payload.message_type,
            schema_version=payload.schema_version,
            payload=payload.model_dump(mode="json"),
            now=now or utcnow(),
            traceparent=self.message.hop_traceparent(),
        )
        self._outputs.append(Output(stream, message, ttl, maxlen, terminal))
        return message
