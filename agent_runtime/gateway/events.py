"""Live events: Server-Sent Events of one request (``GET /v1/requests/{cid}/events``) and the
fleet's WebSocket broadcast (``/v1/events``).

SSE: one ``event: hop`` per trace record (``id:`` its index in the request's trace, so a
client that reconnects with ``Last-Event-ID: N`` gets the records after N), then one
``event: end`` with ``{"state", "report", "failure"}`` once the reply arrives, then the stream
closes. Comments (``: keepalive``) every 15 s keep proxies from closing an idle stream. Hops
come from the process's shared :class:`~agent_runtime.gateway.follow.TraceFollower`, the end
from its shared reply reader: an open stream holds no Redis connection of its own.

WebSocket: authenticated by the login cookie or, within 5 s, a first message
``{"token": "..."}`` (never a query parameter: URLs end up in logs); needs the ``read``
scope. With the cookie, a browser ``Origin`` must be this host or a configured CORS origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from agent_runtime.gateway.auth import COOKIE, Principal, TokenTable, enforce_rate, require
from agent_runtime.gateway.follow import Subscription, event_json
from agent_runtime.gateway.problems import Problem, problems
from agent_runtime.gateway.views import hop, load_view, outcome

router = APIRouter()
KEEPALIVE = 15.0
#: Seconds the end of a stream waits for the follower's last read of its trace.
CATCH_UP = 5.0
WS_AUTH_TIMEOUT = 5.0
MAX_WS_MESSAGE = 4_096
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: 'hop' events (id = trace index), one 'end' event",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def _start(last_event_id: str | None) -> int:
    if last_event_id is None or last_event_id == "":
        return 0
    if not (last_event_id.isascii() and last_event_id.isdigit()) or len(last_event_id) > 9:
        raise Problem(400, "Last-Event-ID must be the id of an event of this stream (a number)")
    return int(last_event_id) + 1


@router.get(
    "/requests/{cid}/events",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **problems(400, 401, 403, 404, 422, 429)},
    summary="Follow a request: Server-Sent Events, resumable with Last-Event-ID",
)
async def request_events(
    cid: uuid.UUID,
    request: Request,
    _principal: Annotated[Principal, Depends(require("read"))],
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    rt = request.app.state.runtime
    start = _start(last_event_id)
    await load_view(rt, str(cid))  # 404 for an unknown request
    return StreamingResponse(
        _sse(rt, str(cid), start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(rt: Any, cid: str, start: int) -> AsyncIterator[str]:
    sub = rt.follower.subscribe(cid, start)
    waiter = asyncio.get_running_loop().create_task(
        rt.client.replies.wait(rt.keys.reply(cid), rt.settings.sse_max_seconds)
    )
    rt.metrics.sse_clients.inc()
    try:
        yield "retry: 2000\n\n"
        while not waiter.done():
            item = await _next(sub, waiter)
            if item is None and sub.queue.empty() and not waiter.done():
                yield ": keepalive\n\n"
            elif isinstance(item, tuple):
                frame = _hop_frame(*item)
                if frame:
                    yield frame
            elif item == "cut":
                return
        async for frame in _finish(rt, sub, waiter):
            yield frame
    finally:
        rt.metrics.sse_clients.dec()
        rt.follower.unsubscribe(sub)
        waiter.cancel()


async def _next(sub: Subscription, waiter: asyncio.Task[Any]) -> Any:
    """The next queued record, "cut" when the subscriber was cut off, None on keepalive or
    when the reply arrived first."""
    getter = asyncio.get_running_loop().create_task(sub.queue.get())
    try:
        await asyncio.wait({getter, waiter}, timeout=KEEPALIVE, return_when="FIRST_COMPLETED")
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        item = getter.result()
        return "cut" if item is None else item
    return None


def _hop_frame(index: int, record: bytes) -> str | None:
    data = hop(index, record)
    return _frame("hop", data, str(index)) if data is not None else None


async def _finish(rt: Any, sub: Subscription, waiter: asyncio.Task[Any]) -> AsyncIterator[str]:
    """The reply arrived (or the wait ended): the hops not sent yet (the reply's commit wrote
    its trace record too; one shared poll reads them), then the end event."""
    with anyio.move_on_after(CATCH_UP):
        await rt.follower.caught_up(sub.cid)
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        if item is not None and (frame := _hop_frame(*item)):
            yield frame
    rt.follower.unsubscribe(sub)
    try:
        reply = waiter.result()
    except Exception:  # the stream's time is up, or the gateway closes: the client resumes
        return
    yield _frame("end", outcome(reply), "end")


@router.websocket("/events")
async def fleet_events(websocket: WebSocket) -> None:
    rt = websocket.app.state.runtime
    await websocket.accept()
    principal = await _ws_principal(websocket)
    if principal is None:
        return
    queue = rt.feed.listen()
    rt.metrics.ws_clients.inc()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ws_drain, websocket, tg.cancel_scope)
            while True:
                event = await queue.get()
                await websocket.send_text(event_json(event))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        rt.metrics.ws_clients.dec()
        rt.feed.leave(queue)


async def _ws_drain(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends; end everything when it goes."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
    scope.cancel()


async def _ws_principal(websocket: WebSocket) -> Principal | None:
    table: TokenTable = websocket.app.state.tokens
    token = websocket.cookies.get(COOKIE, "")
    if token and not _same_origin(websocket):
        await websocket.close(4403, "cross-origin WebSocket with the login cookie")
        return None
    if not token:
        token = await _first_message_token(websocket)
    principal = table.find(token) if token else None
    if principal is None:
        await websocket.close(4401, "missing or invalid API token")
        return None
    if "read" not in principal.scopes:
        await websocket.close(4403, "the token lacks the 'read' scope")
        return None
    try:
        await enforce_rate(websocket, principal)
    except Problem:
        await websocket.close(4429, "rate limit exceeded")
        return None
    return principal


async def _first_message_token(websocket: WebSocket) -> str:
    with anyio.move_on_after(WS_AUTH_TIMEOUT):
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return ""
        if len(text) > MAX_WS_MESSAGE:
            return ""
        try:
            data = json.loads(text)
        except ValueError:
            return ""
        token = data.get("token") if isinstance(data, dict) else None
        return token if isinstance(token, str) else ""
    return ""


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    allowed = set(websocket.app.state.settings.cors_origins)
    host = websocket.headers.get("host", "")
    return origin in allowed or urlsplit(origin).netloc == host
