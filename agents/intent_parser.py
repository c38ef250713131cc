"""intent_parser: ``user.request`` -> ``intent.parsed`` through the configured LLM provider.

The provider fills :class:`~protocols.pipeline.ParsedIntent` (structured output). An answer
that does not validate is asked for again up to ``attempts`` times, then the request is
reported as ``invalid_request``; it is never passed on. A request the provider refuses
(outside the rules grammar, a 4xx) is reported at once. Provider outages propagate, so the
worker retries the message with backoff.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.agent import MessageContext
from agent_runtime.errors import LLMUnavailable
from agents.common import (
    LLMAgent,
    LLMAsk,
    ask_llm,
    budget_reason,
    finish,
    llm_unavailable,
    over_budget,
)
from protocols.core import UserRequest
from protocols.pipeline import Intent, Outcome, ParsedIntent, RequestInfo, Spend

SYSTEM_PROMPT = """You turn a user's request into a list of actions for an automation runtime.
Actions: list_files (target: a directory), read_file (target: a file path), run_command
(target: the command line), fetch_url (target: an http(s) URL), deploy (target: a service;
parameters: environment, version), count_words (target: a file path).
Parts joined by "and" run in parallel; a part after "then" waits for the parts before it:
put the indices of the actions it waits for in "after". Use only these actions. Set
confidence to how sure you are that the actions are exactly what was asked."""


class IntentParserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: dict[str, Any] = Field(
        default_factory=lambda: {"provider": "rules"},
        description="provider block (see agent_runtime.llm.factory)",
    )
    attempts: int = Field(
        default=2, ge=1, le=10, description="model answers tried before the request is reported"
    )
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    max_tokens: int = Field(default=1024, ge=64, le=100_000)
    give_up_after: int = Field(
        default=3, ge=1, le=100, description="deliveries while the LLM is down before reporting"
    )


class IntentParser(LLMAgent[IntentParserConfig]):
    Config = IntentParserConfig
    consumes = (UserRequest,)
    produces = (Intent, Outcome)

    async def handle(self, ctx: MessageContext) -> None:
        assert isinstance(ctx.payload, UserRequest)
        request = RequestInfo(text=ctx.payload.text, requested_at=ctx.message.timestamp)
        try:
            parsed, spend, error = await self._parse(ctx, request.text)
        except LLMUnavailable as exc:
            reason = llm_unavailable(ctx, exc, self.config.give_up_after)
            finish(ctx, "failed", request, reasons=[reason])
            return
        if parsed is None:
            finish(ctx, "invalid_request", request, reasons=[error], spend=spend)
        elif over_budget(ctx, spend.cost_usd):
            finish(
                ctx,
                "budget_exceeded",
                request,
                spend=spend,
                reasons=[budget_reason(ctx, spend.cost_usd, "parsing cost")],
            )
        elif parsed.confidence < self.config.min_confidence:
            finish(
                ctx,
                "invalid_request",
                request,
                spend=spend,
                reasons=[
                    f"the request is unclear (confidence {parsed.confidence:.2f} < "
                    f"{self.config.min_confidence:.2f}); please rephrase"
                ],
            )
        else:
            ctx.send(
                Intent(
                    request=request,
                    actions=parsed.actions,
                    confidence=parsed.confidence,
                    spend=spend,
                )
            )

    async def _parse(
        self, ctx: MessageContext, text: str
    ) -> tuple[ParsedIntent | None, Spend, str]:
        ask = LLMAsk(
            system=SYSTEM_PROMPT,
            prompt=text,
            schema=ParsedIntent,
            max_tokens=self.config.max_tokens,
            attempts=self.config.attempts,
            invalid_event="intent_answer_invalid",
            invalid_reason="the model's answer was not a valid intent: ",
        )
        return await ask_llm(self.runtime, ctx, self.provider, ask, Spend(), lambda value: value)
