"""OpenAI Chat Completions through the official async SDK (``openai.AsyncOpenAI``).

Structured output by ``response_format={"type": "json_schema", "strict": true, ...}`` with the
pydantic model's schema made strict the way the SDK's own ``parse()`` does it; the answer is
validated with the model. The key comes from ``OPENAI_API_KEY`` only; the base URL from
config or ``OPENAI_BASE_URL``. The SDK is imported on first use and its own retries are off
(``max_retries=0``): the call policy (agent_runtime/policies) owns retrying.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agent_runtime.errors import LLMOutputError, LLMUnavailable
from agent_runtime.llm.base import Completion, Usage
from agent_runtime.llm.boundary import attempt_timeout, error_from_status, tool_name, validate_json
from agent_runtime.llm.sdk_base import SDKProvider

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_MODEL = "gpt-4.1-mini"
KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"


#: Validation keywords OpenAI's strict mode refuses; pydantic still checks them locally.
_NOT_IN_STRICT = frozenset(
    {
        "minLength",
        "maxLength",
        "default",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "patternProperties",
    }
)
#: Keys whose values map names to schemas (walk the values, keep the names).
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions"})


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The ``json_schema`` response format for ``schema``: strict when the schema can be
    (every object closed, as the SDK's own ``parse()`` makes it, minus the keywords strict
    mode refuses); a model with free-form maps (``dict[str, X]``) cannot be strict, so it is
    sent as a plain, non-strict schema. The answer is validated with pydantic either way."""
    from openai.lib._pydantic import to_strict_json_schema  # the SDK's parse() helper

    strict = _strip(to_strict_json_schema(schema))
    ok = _all_objects_closed(strict)
    return {
        "type": "json_schema",
        "json_schema": {
            "name": tool_name(schema),
            "strict": ok,
            "schema": strict if ok else schema.model_json_schema(),
        },
    }


def _strip(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: ({k: _strip(v) for k, v in value.items()} if key in _SCHEMA_MAPS else _strip(value))
        for key, value in node.items()
        if key not in _NOT_IN_STRICT
    }


def _all_objects_closed(node: Any) -> bool:
    if isinstance(node, list):
        return all(_all_objects_closed(item) for item in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object" and node.get("additionalProperties") is not False:
        return False
    return all(
        all(_all_objects_closed(v) for v in value.values())
        if key in _SCHEMA_MAPS
        else _all_objects_closed(value)
        for key, value in node.items()
    )


class OpenAIProvider(SDKProvider["AsyncOpenAI"]):
    """:class:`~agent_runtime.llm.base.LLMProvider` for OpenAI models."""

    name = "openai"
    default_model = DEFAULT_MODEL
    key_env = KEY_ENV
    base_url_env = BASE_URL_ENV

    def _make_client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI  # lazy: only workers that use it pay the import

        return AsyncOpenAI(
            api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    async def _attempt(
        self, system: str, prompt: str, schema: type[ModelT], max_tokens: int
    ) -> Completion[ModelT]:
        extra: dict[str, Any] = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        reply = await self._create(
            model=self.model,
            max_completion_tokens=max_tokens,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            response_format=response_format(schema),
            **extra,
        )
        tokens = reply.usage
        usage = self.prices.with_cost(
            Usage(
                provider=self.name,
                model=reply.model or self.model,
                input_tokens=tokens.prompt_tokens if tokens else 0,
                output_tokens=tokens.completion_tokens if tokens else 0,
            )
        )
        return Completion(value=self._value(reply, schema, usage), usage=usage)

    async def _create(self, **params: Any) -> ChatCompletion:
        import openai

        client = self._client()
        try:
            reply: ChatCompletion = await client.chat.completions.create(
                timeout=attempt_timeout(self.timeout), **params
            )
        except openai.APIStatusError as exc:
            raise error_from_status(
                self.name, exc.status_code, exc.response.headers, exc.message
            ) from exc
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise LLMUnavailable(f"openai unreachable: {type(exc).__name__}") from exc
        except openai.APIError as exc:  # e.g. a response the SDK could not read
            raise LLMUnavailable(f"openai call failed: {type(exc).__name__}") from exc
        return reply

    def _value(self, reply: ChatCompletion, schema: type[ModelT], usage: Usage) -> ModelT:
        if not reply.choices:
            raise LLMOutputError(f"openai model {usage.model}: answer has no choices", usage=usage)
        choice = reply.choices[0]
        if choice.message.refusal:
            raise LLMOutputError(
                f"openai model {usage.model} refused: {choice.message.refusal[:300]}", usage=usage
            )
        if choice.finish_reason == "length":
            raise LLMOutputError(
                f"openai model {usage.model}: answer truncated at max_completion_tokens",
                usage=usage,
            )
        if not choice.message.content:
            raise LLMOutputError(f"openai model {usage.model}: empty answer", usage=usage)
        return validate_json(schema, choice.message.content, usage)
