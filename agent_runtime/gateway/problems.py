"""RFC 9457 problem details: every error the gateway answers is ``application/problem+json``
with ``type``, ``title``, ``status`` and ``detail`` (never a traceback, never a secret)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_runtime.transport.connect import unavailable

PROBLEM_JSON = "application/problem+json"
_log = structlog.get_logger("agent_runtime.gateway")


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, exc.headers, **exc.extra)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def on_invalid(_request: Request, exc: Exception) -> JSONResponse:
    """422 with the problems (location and message only: the input itself is not echoed)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()[:20]
    ]
    loc, msg = (errors[0]["loc"], errors[0]["msg"]) if errors else ([], "invalid request")
    detail = f"{'.'.join(loc)}: {msg}" if loc else str(msg)
    return problem_response(422, detail[:500], errors=errors)


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: 503 with ``Retry-After`` when Redis cannot serve now (down, loading,
    out of memory), else 500; the error's type is logged, never the request's headers."""
    if unavailable(exc):
        _log.warning("redis_unavailable", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            503, "the runtime's Redis server is unavailable; retry", {"Retry-After": "1"}
        )
    _log.error("internal_error", path=request.url.path, error=repr(exc)[:300])
    return problem_response(500, "internal error (logged)")


#: The OpenAPI description of a problem answer, for ``responses=`` of the routes.
PROBLEM_SCHEMA: dict[str, Any] = {
    "description": "a problem (RFC 9457)",
    "content": {
        PROBLEM_JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
                "required": ["title", "status", "detail"],
            }
        }
    },
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return dict.fromkeys(codes, PROBLEM_SCHEMA)
