"""The /v1 REST API: requests (submit, show, wait, list), approvals. Status and dead letters
are in agent_runtime/gateway/admin.py, SSE and WebSocket in events.py; all are included
here, so ``router`` is the whole /v1 API."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import ValidationError

from agent_runtime.approval import APPROVAL_STATE, pending_approvals, submit_decision
from agent_runtime.client import user_request
from agent_runtime.errors import AgentRuntimeError, RequestError
from agent_runtime.gateway import admin, events
from agent_runtime.gateway.auth import Principal, require
from agent_runtime.gateway.models import (
    Accepted,
    Decision,
    DecisionResult,
    PendingApproval,
    RequestSummary,
    RequestView,
    SubmitRequest,
)
from agent_runtime.gateway.problems import Problem, problems
from agent_runtime.gateway.views import decode_reply, entry_fields, load_view, request_view
from agent_runtime.observability.redaction import redact
from protocols.base import Payload

_log = structlog.get_logger("agent_runtime.gateway")
router = APIRouter(prefix="/v1")
router.include_router(admin.router)
router.include_router(events.router)

#: Characters of an Idempotency-Key accepted (longer: 400).
MAX_IDEMPOTENCY_KEY = 255
#: Statuses the client can expect from /v1 routes with a token.
AUTH_PROBLEMS = (401, 403, 429)
CidPath = Annotated[uuid.UUID, "the request's correlation id"]


def runtime_of(request: Request) -> Any:
    return request.app.state.runtime


@router.post(
    "/requests",
    status_code=202,
    response_model=Accepted,
    responses=problems(*AUTH_PROBLEMS, 400, 409, 413, 422, 503),
    summary="Publish a request",
)
async def submit(
    body: SubmitRequest,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require("submit"))],
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Accepted:
    """Publish a request to the pipeline's entry agent (signed like the Python client). With an
    ``Idempotency-Key`` header, a retried POST (same token, same key) returns the first one's
    correlation id and publishes nothing (409 when the body differs)."""
    rt = runtime_of(request)
    payload = _payload(rt, body)
    cid = uuid.uuid4()
    claim = None
    if idempotency_key is not None:
        claim, cid = await _claim(rt, principal, idempotency_key, body, cid)
    if claim is None or claim == "new":
        try:
            await rt.client.publish(
                payload, correlation_id=cid, timeout=body.deadline_seconds, budget_usd=body.budget
            )
        except BaseException:
            if claim == "new":  # nothing was queued: let a retry publish
                await rt.store.release(_idem_key(rt, principal, idempotency_key or ""))
            raise
        rt.metrics.published.inc()
        _log.info("request_published", correlation_id=str(cid), token=principal.name)
    else:
        rt.metrics.replayed.inc()
    location = f"/v1/requests/{cid}"
    response.headers["Location"] = location
    return Accepted(correlation_id=str(cid), status_url=location, events_url=f"{location}/events")


def _payload(rt: Any, body: SubmitRequest) -> Payload:
    try:
        if body.text is not None:
            return user_request(body.text)
        schemas = rt.pipeline.schemas
        if body.message_type not in schemas or body.message_type in (
            "approval.decision",
            "request.failed",
        ):
            raise Problem(422, f"this pipeline takes no {body.message_type!r} requests")
        model = schemas.current(body.message_type)
        if getattr(model, "terminal", False):
            raise Problem(422, f"{body.message_type!r} is a terminal reply, not a request")
        rt.pipeline.routing.agent_for(body.message_type)
        return model.model_validate(body.payload)  # type: ignore[no-any-return]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Problem(422, f"payload.{where}: {first['msg']}"[:500]) from None
    except RequestError as exc:
        raise Problem(422, str(exc)) from None
    except AgentRuntimeError as exc:  # routing: no agent consumes the type
        raise Problem(422, str(exc)[:500]) from None


def _idem_key(rt: Any, principal: Principal, key: str) -> str:
    digest = hashlib.sha256(f"{principal.name}\n{key}".encode()).hexdigest()
    return str(rt.keys.gateway_idempotency(digest))


async def _claim(
    rt: Any, principal: Principal, key: str, body: SubmitRequest, cid: uuid.UUID
) -> tuple[str, uuid.UUID]:
    """("new", cid) when this POST is the key's first; ("seen", first cid) otherwise."""
    if not key.strip() or not key.isprintable():
        raise Problem(400, "Idempotency-Key must be 1-255 printable characters")
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()[:32]
    value = f"{cid} {fingerprint}"
    existing = await rt.store.claim(
        _idem_key(rt, principal, key), value, rt.settings.idempotency_ttl
    )
    if existing is None:
        return "new", cid
    first_cid, _, first_print = existing.partition(" ")
    if first_print != fingerprint:
        raise Problem(409, "this Idempotency-Key was used with another request body; use a new key")
    return "seen", uuid.UUID(first_cid)


@router.get(
    "/requests/{cid}",
    response_model=RequestView,
    responses=problems(*AUTH_PROBLEMS, 404, 422),
    summary="A request: state, hops so far, report or failure",
)
async def show(
    cid: CidPath,
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
    wait: Annotated[
        float | None, Query(gt=0, le=3_600, description="seconds to wait for the end")
    ] = None,
) -> dict[str, Any]:
    rt = runtime_of(request)
    if wait is not None:
        await _wait(rt, str(cid), wait)
    return await load_view(rt, str(cid))


@router.post(
    "/requests/{cid}:wait",
    response_model=RequestView,
    responses=problems(*AUTH_PROBLEMS, 404, 422),
    summary="Wait for a request to end (at most timeout seconds), then show it",
)
async def wait_for(
    cid: CidPath,
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
    timeout: Annotated[float, Query(gt=0, le=3_600)] = 30.0,
) -> dict[str, Any]:
    rt = runtime_of(request)
    await _wait(rt, str(cid), timeout)
    return await load_view(rt, str(cid))


async def _wait(rt: Any, cid: str, seconds: float) -> None:
    """Wait through the process's shared reply reader (no connection of its own)."""
    try:
        await rt.client.replies.wait(rt.keys.reply(cid), min(seconds, rt.settings.max_wait_seconds))
    except TimeoutError:
        pass
    except RequestError as exc:
        raise Problem(503, f"cannot wait for the reply: {exc}") from None


@router.get(
    "/requests",
    response_model=list[RequestSummary],
    responses=problems(*AUTH_PROBLEMS, 422),
    summary="The most recent requests (newest first)",
)
async def recent(
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
    limit: Annotated[int, Query(ge=1, le=1_000)] = 50,
) -> list[dict[str, Any]]:
    """Requests still in the entry agent's inbox (its retention), newest first, with state."""
    rt = runtime_of(request)
    if not rt.entry_agent:
        return []
    limit = min(limit, rt.settings.recent_limit)
    entries = []
    for stream in rt.pipeline.routing.inboxes(rt.entry_agent):
        entries += [(stream, e) for e in await rt.store.newest(stream, limit)]
    entries.sort(key=lambda e: tuple(int(p) for p in e[1][0].split("-")), reverse=True)
    found = []
    for stream, (entry_id, fields) in entries:
        decoded = decode_reply(rt.client.codec, fields, stream)
        if decoded is not None and decoded.message.from_agent == "client":
            found.append((entry_id, decoded))
        if len(found) >= limit:
            break
    cids = [str(d.message.correlation_id) for _, d in found]
    replies = await rt.store.first_entries([rt.keys.reply(c) for c in cids])
    out = []
    for (entry_id, decoded), cid, reply in zip(found, cids, replies, strict=True):
        answer = decode_reply(rt.client.codec, entry_fields(reply), rt.keys.reply(cid))
        view = request_view(cid, [], answer)
        text = decoded.message.payload.get("text")
        out.append(
            {
                "correlation_id": cid,
                "state": view["state"],
                "message_type": decoded.message.message_type,
                "published_at": int(entry_id.split("-")[0]) / 1000,
                "text": redact(text[:200]) if isinstance(text, str) else None,
            }
        )
    return out


@router.get(
    "/approvals",
    response_model=list[PendingApproval],
    responses=problems(*AUTH_PROBLEMS),
    summary="Requests with steps waiting for a human decision",
)
async def approvals(
    request: Request, _principal: Annotated[Principal, Depends(require("read"))]
) -> list[dict[str, Any]]:
    rt = runtime_of(request)
    pattern = rt.keys.request_state("*", APPROVAL_STATE)
    out = []
    for key in await rt.reader.scan(pattern, "hash"):
        cid = key[key.index("{") + 1 : key.rindex("}")]
        pending = await pending_approvals(rt.client.state, rt.keys, cid)
        if pending:
            out.append({"correlation_id": cid, "steps": redact(pending)})
    return out


@router.post(
    "/requests/{cid}/approvals",
    response_model=DecisionResult,
    responses=problems(*AUTH_PROBLEMS, 409, 422),
    summary="Approve or reject a request's waiting steps",
)
async def decide(
    cid: CidPath,
    body: Decision,
    request: Request,
    principal: Annotated[Principal, Depends(require("approve"))],
) -> DecisionResult:
    """The decision goes to the safety checker (signed approval, the router resumes the plan).
    The approver recorded is the token's name, or ``APPROVER via TOKEN`` when the body names
    someone else. 409 when none (or not every named step) of the request is waiting."""
    rt = runtime_of(request)
    approver = principal.name
    if body.approver and body.approver != principal.name:
        approver = f"{body.approver} via {principal.name}"[:100]
    try:
        steps = await submit_decision(
            rt.client,
            str(cid),
            approved=body.approve,
            steps=body.steps,
            approver=approver,
            comment=body.reason,
        )
    except RequestError as exc:
        raise Problem(409, str(exc)) from None
    _log.info(
        "approval_decided", correlation_id=str(cid), approved=body.approve, token=principal.name
    )
    return DecisionResult(
        correlation_id=str(cid), approved=body.approve, steps=steps, approver=approver
    )
