"""Agents used by the benchmarks."""

from __future__ import annotations

from pydantic import BaseModel

from agent_runtime import Agent, MessageContext
from protocols.core import UserRequest


class Noop(Agent[BaseModel]):
    """Consumes requests and does nothing: measures the runtime's own per-message cost."""

    consumes = (UserRequest,)

    async def handle(self, ctx: MessageContext) -> None:
        return None
