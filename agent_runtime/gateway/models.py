"""The JSON shapes of the /v1 API (request bodies and answers), as they appear in the OpenAPI
schema. Bodies refuse unknown fields and bound every size."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.core import MAX_REQUEST_TEXT

STEP_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_Body):
    """A request: ``text`` (a ``user.request``) or ``payload`` (of ``message_type``)."""

    text: str | None = Field(default=None, min_length=1, max_length=MAX_REQUEST_TEXT)
    payload: dict[str, Any] | None = None
    message_type: str = Field(
        default="user.request", pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$", max_length=128
    )
    deadline_seconds: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    budget: float | None = Field(default=None, ge=0, le=1_000_000, description="USD")

    @model_validator(mode="after")
    def _one_of(self) -> SubmitRequest:
        if (self.text is None) == (self.payload is None):
            raise ValueError("give exactly one of 'text' and 'payload'")
        if self.text is not None and not self.text.strip():
            raise ValueError("'text' is only whitespace")
        return self


class Accepted(BaseModel):
    correlation_id: str
    status_url: str
    events_url: str


class Hop(BaseModel):
    index: int
    agent: str | None
    message_type: str | None
    outcome: str | None
    duration_ms: float | None
    at: str | None
    from_agent: str | None = None
    to_agent: str | None = None
    message_id: str | None = None
    reason: str | None = None


class RequestView(BaseModel):
    correlation_id: str
    state: str = Field(
        description="running, waiting_approval, succeeded, failed, rejected, timeout, "
        "cancelled, or a report's own non-success status (budget_exceeded, invalid_request)"
    )
    hops: list[Hop]
    report: dict[str, Any] | None
    failure: dict[str, Any] | None


class RequestSummary(BaseModel):
    correlation_id: str
    state: str
    message_type: str
    published_at: float
    text: str | None = None


class Decision(_Body):
    approve: bool
    steps: list[str] = Field(default_factory=list, max_length=100)
    approver: str | None = Field(default=None, min_length=1, max_length=60)
    reason: str = Field(default="", max_length=1_000)

    @model_validator(mode="after")
    def _step_ids(self) -> Decision:
        bad = [s for s in self.steps if not re.match(STEP_ID, s)]
        if bad:
            raise ValueError("step ids are 1-64 letters, digits, '_', '.' or '-'")
        return self


class DecisionResult(BaseModel):
    correlation_id: str
    approved: bool
    steps: list[str]
    approver: str


class PendingApproval(BaseModel):
    correlation_id: str
    steps: dict[str, Any]


class Purge(_Body):
    """Which dead letters to delete (at least one selector), and the safeguards: nothing is
    deleted without ``confirm: true``; ``dry_run`` only lists them."""

    ids: list[str] = Field(default_factory=list, max_length=1_000)
    agent: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=64)
    all: bool = False
    dry_run: bool = False
    confirm: bool = False

    @model_validator(mode="after")
    def _selected(self) -> Purge:
        if not (self.ids or self.agent or self.reason or self.all):
            raise ValueError("name dead letters (ids), filter them (agent, reason) or set all")
        if any(len(i) > 64 for i in self.ids):
            raise ValueError("a dead-letter id has at most 64 characters")
        return self
