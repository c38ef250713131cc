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


# The six stages of benchmarks/pipeline.py: stage 1 takes the request, stages 2-5 forward a
# hop payload, stage 6 answers (a terminal reply). Each forwards a no-op's worth of work.


class Hop(Payload):
    """A request between two stages of benchmarks/pipeline.py."""

    message_type = "bench.hop"
    hop: int
    text: str


class Hop2(Hop):
    message_type = "bench.hop2"


class Hop3(Hop):
    message_type = "bench.hop3"


class Hop4(Hop):
    message_type = "bench.hop4"


class Hop5(Hop):
    message_type = "bench.hop5"


def _text(ctx: MessageContext) -> str:
    payload = ctx.payload
    return payload.text if isinstance(payload, UserRequest | Hop) else ""


class Stage1(Agent[BaseModel]):
    consumes = (UserRequest,)
    produces = (Hop,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.send(Hop(hop=1, text=_text(ctx)))


class Stage2(Agent[BaseModel]):
    consumes = (Hop,)
    produces = (Hop2,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.send(Hop2(hop=2, text=_text(ctx)))


class Stage3(Agent[BaseModel]):
    consumes = (Hop2,)
    produces = (Hop3,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.send(Hop3(hop=3, text=_text(ctx)))


class Stage4(Agent[BaseModel]):
    consumes = (Hop3,)
    produces = (Hop4,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.send(Hop4(hop=4, text=_text(ctx)))


class Stage5(Agent[BaseModel]):
    consumes = (Hop4,)
    produces = (Hop5,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.send(Hop5(hop=5, text=_text(ctx)))


class Stage6(Agent[BaseModel]):
    consumes = (Hop5,)
    produces = (Answered,)

    async def handle(self, ctx: MessageContext) -> None:
        ctx.reply(Answered(text=_text(ctx)))
