"""A local server speaking the OpenAI Chat Completions API (POST /v1/chat/completions)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.llmfakes.server import FakeAPI, Reply

_ids = itertools.count(1)


def json_answer(
    content: Any,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    model: str = "gpt-4.1-mini-2025-04-14",
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> Reply:
    """The model answers ``content`` (a JSON-able object, or a raw string sent as is)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Reply(
        200,
        {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": None if refusal else text,
                        "refusal": refusal,
                    },
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": text, "type": kind, "param": None, "code": kind}},
        headers or {},
    )


class OpenAIFake(FakeAPI):
    def __init__(self) -> None:
        super().__init__("/chat/completions", error(500, "server_error", "nothing scripted"))

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"
