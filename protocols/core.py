"""Payloads the runtime itself needs: the user request that starts every pipeline, and the
failure reply the runtime writes when it gives up on a request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocols.base import Payload

#: Characters a request text may have (``UserRequest.text``, ``RequestInfo.text``): the
#: client refuses longer or empty text before publishing.
MAX_REQUEST_TEXT = 16_000


class UserRequest(Payload):
    """What a user asks for, as published by ``agent-runtime send``/``run`` or the client."""

    message_type = "user.request"
    schema_version = 1

    text: str = Field(min_length=1, max_length=MAX_REQUEST_TEXT)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestFailedV1(Payload):
    """Version 1 of ``request.failed`` (kept readable; upgraded to :class:`RequestFailed`)."""

    message_type = "request.failed"
    schema_version = 1
    terminal = True

    status: Literal["timeout", "failed"]
    reason: str = Field(max_length=2_000)
    agent: str = Field(max_length=64)
    stage: str = Field(default="", max_length=128)


#: How a request that did not succeed ended (``RequestFailed.status``).
FailureStatus = Literal["failed", "timeout", "rejected", "cancelled"]


class RequestFailed(Payload):
    """The terminal reply the runtime writes to the requester's reply stream when a request
    does not succeed: a message of it was rejected or dead-lettered, its deadline passed, or no
    worker consumed it in time. Exactly one terminal reply per request (success or this one):
    every writer goes through the request's outcome guard (``Keys.outcome``). Terminal: no
    agent consumes it.

    ``status`` says how it ended (``rejected``: a handler or policy refused it, not worth
    retrying; ``failed``: it failed or could not be processed; ``timeout``: its deadline
    passed); ``code`` is the machine-readable reason (``expired``, ``no_consumer``,
    ``rejected``, ``max_deliveries``, ``invalid``, ...), ``reason`` the human text, ``agent``
    and ``hop`` where it ended, ``dead_letter_id`` the id of its dead-letter entry (field
    ``dead_letter_id`` of the entry in ``P:dlq:AGENT``), empty when none was written."""

    message_type = "request.failed"
    schema_version = 2
    terminal = True
    previous = RequestFailedV1

    status: FailureStatus
    reason: str = Field(max_length=2_000)
    agent: str = Field(max_length=64, description="the agent type that gave up")
    stage: str = Field(
        default="",
        max_length=128,
        description="message type that was being handled or waited to be",
    )
    code: str = Field(default="", max_length=64, description="machine-readable reason")
    hop: int = Field(default=0, ge=0, le=1_000, description="hops of the message that ended it")
    dead_letter_id: str = Field(default="", max_length=64)
