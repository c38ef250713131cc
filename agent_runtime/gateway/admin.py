"""/v1 status and dead letters (list, show, replay, purge with the CLI's safeguards: replay
and purge need the ``admin`` scope, purge names or filters what it deletes and deletes
nothing without ``confirm: true``; ``dry_run`` changes nothing). Answers are redacted like
the CLI's ``--json`` output."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request

from agent_runtime.errors import AgentRuntimeError
from agent_runtime.gateway.auth import Principal, require
from agent_runtime.gateway.fleet import fleet_status
from agent_runtime.gateway.models import Purge
from agent_runtime.gateway.problems import Problem, problems
from agent_runtime.observability import deadletters
from agent_runtime.observability.redaction import redact

_log = structlog.get_logger("agent_runtime.gateway")
router = APIRouter()
AUTH = (401, 403, 429)
LetterId = Annotated[str, Path(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$", description="entry id")]


@router.get("/status", responses=problems(*AUTH), summary="The fleet per agent type")
async def status(
    request: Request, _principal: Annotated[Principal, Depends(require("read"))]
) -> dict[str, Any]:
    """Per agent type: live workers, msg/s, lag, pending, oldest pending age, dead letters,
    breaker states; and whether envelopes are signed."""
    rt = request.app.state.runtime
    return await fleet_status(rt, rt.throughput)


@router.get("/dead-letters", responses=problems(*AUTH, 422), summary="List dead letters")
async def list_letters(
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
    agent: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    rt = request.app.state.runtime
    _known_agent(rt, agent)
    letters = await deadletters.find_letters(rt.dead_letters, agent=agent, reason=reason)
    return redact([letter.summary() for letter in letters])  # type: ignore[no-any-return]


def _known_agent(rt: Any, agent: str | None) -> None:
    if agent is not None and agent not in rt.pipeline.agents:
        raise Problem(422, f"unknown agent type {agent!r}")


async def _letter(rt: Any, letter_id: str) -> deadletters.Letter:
    found = await deadletters.find_letters(rt.dead_letters, ids=[letter_id])
    if not found:
        raise Problem(404, f"no dead letter {letter_id}")
    return found[0]


@router.get(
    "/dead-letters/{letter_id}", responses=problems(*AUTH, 404, 422), summary="One dead letter"
)
async def show_letter(
    letter_id: LetterId,
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
) -> dict[str, Any]:
    letter = await _letter(request.app.state.runtime, letter_id)
    return redact(letter.detail())  # type: ignore[no-any-return]


@router.post(
    "/dead-letters/{letter_id}:replay",
    responses=problems(*AUTH, 404, 409, 422),
    summary="Re-publish a dead letter to its inbox and remove it",
)
async def replay_letter(
    letter_id: LetterId,
    request: Request,
    principal: Annotated[Principal, Depends(require("admin"))],
    dry_run: bool = False,
) -> dict[str, Any]:
    rt = request.app.state.runtime
    letter = await _letter(rt, letter_id)
    item: dict[str, Any] = {
        "id": letter.id,
        "agent": letter.agent,
        "stream": letter.get("stream"),
        "message_id": letter.get("message_id") or None,
        "correlation_id": letter.get("correlation_id") or None,
        "new_id": None,
        "dry_run": dry_run,
    }
    if not dry_run:
        try:
            item["new_id"] = await deadletters.replay(rt.dead_letters, letter, rt.pipeline.codec())
        except AgentRuntimeError as exc:
            raise Problem(409, str(exc)) from None
        _log.info("dead_letter_replayed", id=letter.id, token=principal.name)
    return item


@router.post(
    "/dead-letters:purge",
    responses=problems(*AUTH, 409, 422),
    summary="Delete dead letters (confirm: true required; dry_run lists them)",
)
async def purge_letters(
    body: Purge,
    request: Request,
    principal: Annotated[Principal, Depends(require("admin"))],
) -> dict[str, Any]:
    rt = request.app.state.runtime
    _known_agent(rt, body.agent)
    letters = await deadletters.find_letters(
        rt.dead_letters, agent=body.agent, reason=body.reason, ids=body.ids or None
    )
    summaries = redact([letter.summary() for letter in letters])
    if body.dry_run:
        return {"dry_run": True, "would_purge": summaries, "purged": 0}
    if letters and not body.confirm:
        raise Problem(
            409,
            f"this would delete {len(letters)} dead letter(s): repeat with confirm: true "
            "(or dry_run: true to list them)",
        )
    deleted = await deadletters.purge(rt.dead_letters, letters)
    _log.info("dead_letters_purged", count=deleted, token=principal.name)
    return {"dry_run": False, "purged": deleted}
