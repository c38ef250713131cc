"""Agents used by the benchmarks."""

from __future__ import annotations

from pydantic import BaseModel

from agent_runtime import Agent, MessageContext
from protocols.base import Payload
from protocols.core import UserRequest


class Noop(Agent[BaseModel]):
    """Consumes requests and does nothing: measures the runtime's own per-message cost."""

    consumes = (UserRequest,)

    async def handle(self, ctx: MessageContext) -> None:
        return None


class Answered(Payload):
    """The terminal reply of :class:`Answer`."""

    message_type = "bench.answered"
    terminal = True
    text: str


class Answer(Agent[BaseModel]):
    """Answers every request at once with a terminal reply (benchmarks/gateway.py): one hop,
    so the figures are the requester's side (client or gateway), not the pipeline's."""

    consumes = (UserRequest,)
    produces = (Answered,)

    async def handle(self, ctx: MessageContext) -> None:
        assert isinstance(ctx.payload, UserRequest)
        ctx.reply(Answered(text=ctx.payload.text))
