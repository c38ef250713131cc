"""Helpers the built-in agents share: the LLM provider, asking it with retries on invalid
answers, usage booking, the budget check at every hop, and ending a request early with an
:class:`~protocols.pipeline.Outcome`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from agent_runtime.agent import Agent, AgentRuntime, MessageContext
from agent_runtime.errors import LLMOutputError, LLMRequestError, LLMUnavailable, Retry
from agent_runtime.llm.base import LLMProvider, Usage
from protocols.pipeline import Outcome, OutcomeStatus, Plan, RequestInfo, Spend, StepResult

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
ConfigT = TypeVar("ConfigT", bound=BaseModel)


def llm_provider(runtime: AgentRuntime, spec: dict[str, Any]) -> LLMProvider:
    """``runtime.extras["llm"]`` when the process supplies one (tests, custom hosts), else the
    provider the agent's ``llm:`` block names (offline ``rules`` by default)."""
    provided = runtime.extras.get("llm")
    if provided is not None:
        return provided  # type: ignore[no-any-return]
    from agent_runtime.llm.factory import build_provider

    return build_provider(spec, store=runtime.llm_store, keys=runtime.keys)


class LLMAgent(Agent[ConfigT]):
    """An agent whose Config has an ``llm:`` block: :attr:`provider` is built on first use."""

    _provider: LLMProvider | None = None

    @property
    def provider(self) -> LLMProvider:
        if self._provider is None:
            self._provider = llm_provider(self.runtime, self.config.llm)  # type: ignore[attr-defined]
        return self._provider


async def book_usage(runtime: AgentRuntime, ctx: MessageContext, usage: Usage, call: int) -> None:
    """Record ``usage`` in the process's Prometheus metrics (LLM calls, tokens and cost by
    provider and model, when ``runtime.extras["metrics"]`` is set) and in the request's cost
    ledger, once per (message, call)."""
    metrics = runtime.extras.get("metrics")
    if metrics is not None:
        metrics.record_usage(usage)
    if runtime.llm_store is None or (
        usage.cost_usd == 0 and usage.input_tokens == 0 and usage.output_tokens == 0
    ):
        return
    from agent_runtime.llm.accounting import CostLedger

    ledger = CostLedger(runtime.llm_store, runtime.keys)
    await ledger.record(
        str(ctx.message.correlation_id), str(ctx.message.message_id), usage, call=call
    )


@dataclass(frozen=True, slots=True)
class LLMAsk(Generic[ModelT]):
    """One structured question to the LLM provider, and how an agent reports its failures."""

    system: str
    prompt: str
    schema: type[ModelT]
    max_tokens: int
    attempts: int
    #: Log event of an answer that did not validate (logged at warning, then asked again).
    invalid_event: str
    #: Prefix of the reason reported when no answer validated.
    invalid_reason: str
    #: Prefix of the reason reported when the provider refuses the request.
    refused_reason: str = ""
    #: Exceptions that mark an answer invalid (raised by the provider or by ``check``).
    invalid: tuple[type[Exception], ...] = (LLMOutputError,)


async def ask_llm(
    runtime: AgentRuntime,
    ctx: MessageContext,
    provider: LLMProvider,
    ask: LLMAsk[ModelT],
    spend: Spend,
    check: Callable[[ModelT], T],
) -> tuple[T | None, Spend, str]:
    """``(check(answer), spend, "")`` for the first answer that validates in ``ask.attempts``
    tries, else ``(None, spend, reason)``; each answer's usage is booked and added to
    ``spend``. :class:`~agent_runtime.errors.LLMUnavailable` propagates (see
    :func:`llm_unavailable`)."""
    error = ""
    for call in range(ask.attempts):
        try:
            completion = await provider.complete(
                system=ask.system, prompt=ask.prompt, schema=ask.schema, max_tokens=ask.max_tokens
            )
            await book_usage(runtime, ctx, completion.usage, call)
            spend = spend_with(spend, completion.usage)
            return check(completion.value), spend, ""
        except LLMRequestError as exc:
            return None, spend, f"{ask.refused_reason}{exc}"
        except ask.invalid as exc:
            usage = getattr(exc, "usage", None)
            spend = spend_with(spend, usage if isinstance(usage, Usage) else None)
            error = f"{ask.invalid_reason}{exc}"
            ctx.log.warning(ask.invalid_event, attempt=call + 1, error=str(exc))
    return None, spend, error


def llm_unavailable(ctx: MessageContext, exc: LLMUnavailable, give_up_after: int) -> str:
    """Redeliver later (Retry, honouring Retry-After) while deliveries remain; on delivery
    ``give_up_after`` return the reason to report, so a request never hangs on an outage."""
    if ctx.delivery_count < give_up_after:
        raise Retry(f"LLM provider unavailable: {exc}", delay=getattr(exc, "retry_after", None))
    return f"the LLM provider is unavailable ({ctx.delivery_count} deliveries): {exc}"


def spend_with(spend: Spend, usage: Usage | None) -> Spend:
    if usage is None:
        return spend
    return spend.add(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=usage.cost_usd
    )


def over_budget(ctx: MessageContext, cost_usd: float) -> bool:
    """True when ``cost_usd`` (spent, or spent + estimate) is more than the request's budget."""
    budget = ctx.message.budget_usd
    return budget is not None and cost_usd > budget + 1e-12


def budget_reason(ctx: MessageContext, cost_usd: float, what: str) -> str:
    return f"{what} ${cost_usd:.6f} is over the request budget ${ctx.message.budget_usd:.6f}"


def finish(
    ctx: MessageContext,
    status: OutcomeStatus,
    request: RequestInfo,
    *,
    reasons: Sequence[str] = (),
    plan: Plan | None = None,
    results: Sequence[StepResult] = (),
    spend: Spend | None = None,
    statuses: dict[str, str] | None = None,
) -> None:
    """End the request now: hand an Outcome to the reporter."""
    ctx.send(
        Outcome(
            status=status,
            request=request,
            reasons=list(reasons),
            plan=plan,
            results=list(results),
            statuses=statuses or {},
            spend=spend or Spend(),
            finished_by=ctx.agent,
        )
    )
