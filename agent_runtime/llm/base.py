"""The LLM provider interface. Only agent_runtime/llm imports the vendor SDKs.

A provider turns a prompt into an instance of a pydantic model (structured output) and
reports the tokens and cost it spent. Agents depend on this interface only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Completion(Generic[T]):
    value: T
    usage: Usage


class LLMProvider(Protocol):
    """Structured completion: ``system`` + ``prompt`` -> an instance of ``schema``."""

    name: str

    async def complete(
        self, *, system: str, prompt: str, schema: type[ModelT], max_tokens: int = 1024
    ) -> Completion[ModelT]: ...
