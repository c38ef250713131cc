"""ASGI middleware that runs before any route: the request body cap (413 before parsing,
whether the size is announced or not), the JSON depth cap (400), and per-route metrics."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_runtime.gateway.problems import problem_response
from agent_runtime.limits import too_deep
from agent_runtime.observability.gateway_metrics import GatewayMetrics


class BodyLimit:
    """Reads a request's body up to ``max_bytes`` before the app sees it; a larger body (by
    ``Content-Length`` or as it arrives) is answered 413 without reading further, a JSON body
    nested deeper than the runtime's cap 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length and (not length.isdigit() or int(length) > self.max_bytes):
            await self.refuse(scope, receive, send, 413)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > self.max_bytes:
                await self.refuse(scope, receive, send, 413)
                return
        if b"json" in headers.get(b"content-type", b"") and too_deep(bytes(body)):
            await self.refuse(scope, receive, send, 400)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        detail = (
            f"request body larger than {self.max_bytes} bytes"
            if status == 413
            else "request body nests too deep"
        )
        await problem_response(status, detail, {"Connection": "close"})(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when it comes

    return replay


class Timing:
    """Counts every HTTP answer by method, route template and status; times it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self.metrics.latency.labels(_route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.calls.labels(scope["method"], _route(scope), str(status["code"])).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
