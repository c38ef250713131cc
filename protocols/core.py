"""Payloads the runtime itself needs: the user request that starts every pipeline."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from protocols.base import Payload


class UserRequest(Payload):
    """What a user asks for, as published by ``agent-runtime send``/``run`` or the client."""

    message_type = "user.request"
    schema_version = 1

    text: str = Field(min_length=1, max_length=16_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
