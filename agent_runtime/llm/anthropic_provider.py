"""Anthropic Messages API through the official async SDK (``anthropic.AsyncAnthropic``).

Structured output by tool use: one tool whose ``input_schema`` is the pydantic model's JSON
schema, and ``tool_choice`` forcing it; the tool input is validated with the model. The key
comes from ``ANTHROPIC_API_KEY`` only; the base URL from config or ``ANTHROPIC_BASE_URL``.
The SDK is imported on first use (it takes ~1-2 s to import), and its own retries are off
(``max_retries=0``): the call policy (agent_runtime/policies) owns retrying.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agent_runtime.errors import LLMOutputError, LLMUnavailable
from agent_runtime.llm.base import Completion, Usage
from agent_runtime.llm.boundary import (
    attempt_timeout,
    error_from_status,
    tool_name,
    validate_object,
)
from agent_runtime.llm.sdk_base import SDKProvider

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_MODEL = "claude-haiku-4-5"
KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"


class AnthropicProvider(SDKProvider["AsyncAnthropic"]):
    """:class:`~agent_runtime.llm.base.LLMProvider` for Anthropic models."""

    name = "anthropic"
    default_model = DEFAULT_MODEL
    key_env = KEY_ENV
    base_url_env = BASE_URL_ENV

    def _make_client(self) -> AsyncAnthropic:
        from anthropic import AsyncAnthropic  # lazy: slow import, only where used

        return AsyncAnthropic(
            api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    async def _attempt(
        self, system: str, prompt: str, schema: type[ModelT], max_tokens: int
    ) -> Completion[ModelT]:
        name = tool_name(schema)
        tool = {
            "name": name,
            "input_schema": schema.model_json_schema(),
            "description": f"Record your answer: one {schema.__name__} object.",
        }
        extra: dict[str, Any] = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        message = await self._create(
            model=self.model,
            max_tokens=max_tokens,
            system=system,
            messages=[{"role": "user", "content": prompt}],
            tools=[tool],
            tool_choice={"type": "tool", "name": name},
            **extra,
        )
        usage = self.prices.with_cost(
            Usage(
                provider=self.name,
                model=message.model or self.model,
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
            )
        )
        return Completion(value=self._value(message, name, schema, usage), usage=usage)

    async def _create(self, **params: Any) -> Message:
        import anthropic

        client = self._client()
        try:
            message: Message = await client.messages.create(
                timeout=attempt_timeout(self.timeout), **params
            )
        except anthropic.APIStatusError as exc:
            raise error_from_status(
                self.name, exc.status_code, exc.response.headers, exc.message
            ) from exc
        except anthropic.APIConnectionError as exc:  # includes APITimeoutError
            raise LLMUnavailable(f"anthropic unreachable: {type(exc).__name__}") from exc
        except anthropic.APIError as exc:  # e.g. a response the SDK could not read
            raise LLMUnavailable(f"anthropic call failed: {type(exc).__name__}") from exc
        return message

    def _value(self, message: Message, name: str, schema: type[ModelT], usage: Usage) -> ModelT:
        block = next((b for b in message.content if b.type == "tool_use" and b.name == name), None)
        if block is None:
            why = (
                "answer truncated at max_tokens"
                if message.stop_reason == "max_tokens"
                else f"no {name} tool call in the answer (stop_reason={message.stop_reason})"
            )
            raise LLMOutputError(f"anthropic model {usage.model}: {why}", usage=usage)
        if message.stop_reason == "max_tokens":
            raise LLMOutputError(
                f"anthropic model {usage.model}: answer truncated at "
                f"max_tokens ({message.usage.output_tokens} tokens)",
                usage=usage,
            )
        return validate_object(schema, block.input, usage)


__all__ = ["DEFAULT_MODEL", "AnthropicProvider"]
