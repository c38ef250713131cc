"""A local server speaking the Anthropic Messages API (POST /v1/messages) for the real SDK."""

from __future__ import annotations

import itertools
from typing import Any

from tests.llmfakes.server import FakeAPI, Reply

_ids = itertools.count(1)


def tool_answer(
    tool_input: Any,
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    model: str = "claude-haiku-4-5-20251001",
    stop_reason: str = "tool_use",
) -> Reply:
    """The model calls the forced tool with ``tool_input``."""

    def body(request: dict[str, Any]) -> dict[str, Any]:
        name = request["tool_choice"]["name"]
        return message(
            [{"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": name, "input": tool_input}],
            input_tokens,
            output_tokens,
            model,
            stop_reason,
        )

    return Reply(200, body)


def text_answer(
    text: str,
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    model: str = "claude-haiku-4-5-20251001",
) -> Reply:
    """The model ignores the tool and answers prose."""
    return Reply(
        200,
        message([{"type": "text", "text": text}], input_tokens, output_tokens, model, "end_turn"),
    )


def message(
    content: list[dict[str, Any]],
    input_tokens: int,
    output_tokens: int,
    model: str,
    stop_reason: str,
) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": text}}, headers or {})


class AnthropicFake(FakeAPI):
    def __init__(self) -> None:
        super().__init__("/v1/messages", error(500, "api_error", "nothing scripted"))

    @property
    def base_url(self) -> str:
        return self.root_url
