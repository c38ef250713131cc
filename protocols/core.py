"""Payloads the runtime itself needs: the user request that starts every pipeline, and the
failure reply the runtime writes when it gives up on a request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocols.base import Payload


class UserRequest(Payload):
    """What a user asks for, as published by ``agent-runtime send``/``run`` or the client."""

    message_type = "user.request"
    schema_version = 1

    text: str = Field(min_length=1, max_length=16_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestFailed(Payload):
    """Written to the requester's reply stream when the runtime gives up on a request, e.g.
    its deadline passed at some hop (``status="timeout"``). Terminal: no agent consumes it."""

    message_type = "request.failed"
    schema_version = 1
    terminal = True

    status: Literal["timeout", "failed"]
    reason: str = Field(max_length=2_000)
    agent: str = Field(max_length=64, description="the agent type that gave up")
    stage: str = Field(
        default="",
        max_length=128,
        description="message type that was being handled or waited to be",
    )
