"""The Agent base class and the services an agent gets (:class:`AgentRuntime`). The
per-message :class:`MessageContext` a handler works with lives with the rest of one delivery's
way through the worker (agent_runtime/worker/delivery.py) and is re-exported here.

A handler never writes to Redis for its outputs: it calls ``ctx.send(...)``/``ctx.reply(...)``
and the worker writes every output of a message, its done marker and its XACK together, after
the handler returns. Output ids are deterministic, so a redelivered message reproduces the
same ids and downstream de-duplication drops the copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict

from agent_runtime.config.routing import Routing
from agent_runtime.schedule import Timers
from agent_runtime.transport.keys import Keys
from agent_runtime.worker.delivery import REPLY_TTL, MessageContext, Output
from protocols.base import Payload

if TYPE_CHECKING:
    from agent_runtime.llm.base import LLMProvider
    from agent_runtime.observability.metrics import Metrics
    from agent_runtime.observability.redaction import Redactor
    from agent_runtime.policies.middleware import Policies
    from agent_runtime.transport.base import LLMStore, Schedule, ServerTime, State

__all__ = [
    "REPLY_TTL",
    "Agent",
    "AgentRuntime",
    "MessageContext",
    "NoConfig",
    "Output",
    "Services",
]


class NoConfig(BaseModel):
    """The Config of an agent that takes no options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Services:
    """What a worker process hands its agent besides names and keys, each optional:

    * ``policies``: the agent type's resilience policies (``policies.call("tool.http")``);
      LLM providers and tools run their calls under them (docs/policies.md);
    * ``llm``: an LLM provider that replaces the one the agent's ``llm:`` block names
      (tests, custom hosts);
    * ``metrics``: the process's Prometheus metrics (LLM usage by provider and model);
    * ``redactor``: the process's secret masker (reports, dead letters).

    Built by the composition root (agent_runtime/worker/build.py) or a test."""

    policies: Policies | None = None
    llm: LLMProvider | None = None
    metrics: Metrics | None = None
    redactor: Redactor | None = None

    def runtime(
        self,
        name: str,
        keys: Keys,
        routing: Routing,
        state: State,
        log: Any,
        llm_store: LLMStore | None = None,
        clock: ServerTime | None = None,
        schedule: Schedule | None = None,
    ) -> AgentRuntime:
        """The :class:`AgentRuntime` of agent ``name`` with these services."""
        return AgentRuntime(
            name,
            keys,
            routing,
            state,
            log,
            llm_store=llm_store,
            clock=clock or WallClock(),
            timers=None if schedule is None else Timers(schedule, name),
            policies=self.policies,
            llm=self.llm,
            metrics=self.metrics,
            redactor=self.redactor,
        )


class WallClock:
    """The local clock, for an agent run without a server (AgentHarness); a worker gives its
    agent the Redis server's clock (``TIME``, cached: agent_runtime/policies/clock.py)."""

    async def now(self) -> float:
        return time.time()


@dataclass
class AgentRuntime:
    """Services the runtime gives an agent instance: its name, key names, routing, the state
    API for agents that keep per-request state (``state``, keys from ``keys.request_state``;
    agent_runtime/transport/base.py ``State``), a bound logger, the LLM response cache and
    cost ledger (``llm_store``), the clock every process agrees on (``clock.now()``: the
    Redis server's epoch seconds in a worker), the agent type's timers (``timers``: messages to
    itself at a due time, agent_runtime/schedule.py; None where no worker sweeps them, e.g.
    AgentHarness), and the process's typed :class:`Services` (each None when not supplied)."""

    name: str
    keys: Keys
    routing: Routing
    state: State
    log: Any = field(default_factory=structlog.get_logger)
    llm_store: LLMStore | None = None  # None: uncached, unbooked (e.g. AgentHarness)
    clock: ServerTime = field(default_factory=WallClock)
    timers: Timers | None = None
    policies: Policies | None = None
    llm: LLMProvider | None = None
    metrics: Metrics | None = None
    redactor: Redactor | None = None


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
    #: Restricted environment variables (agent_runtime.approval.restricted) this agent type
    #: needs when its pipeline entry names no ``secrets:`` list; the supervisor gives it those
    #: and no other (the safety checker: the approval private key; executors: the public key).
    secrets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ConfigT, runtime: AgentRuntime) -> None:
        self.config = config
        self.runtime = runtime

    async def start(self) -> None:
        """Called once in the worker process before the first message."""

    async def stop(self) -> None:
        """Called once when the worker drains and stops."""

    async def handle(self, ctx: MessageContext) -> None:
        raise NotImplementedError
