"""The I/O-bound agent of benchmarks/scaling.py (importable by worker processes)."""

from __future__ import annotations

import anyio
from pydantic import BaseModel, ConfigDict

from agent_runtime import Agent, MessageContext
from protocols.core import UserRequest


class SlowCallConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_seconds: float = 0.1


class SlowCall(Agent[SlowCallConfig]):
    """Waits ``call_seconds`` per message (an LLM or HTTP call stand-in), produces nothing."""

    Config = SlowCallConfig
    consumes = (UserRequest,)

    async def handle(self, ctx: MessageContext) -> None:
        await anyio.sleep(self.config.call_seconds)
