"""The gateway's ASGI app: ``create_app(settings, pipeline=..., redis_url=...)``.

Routes: the /v1 API (agent_runtime/gateway/api.py; OpenAPI at ``/v1/openapi.json``, docs at
``/v1/docs``), ``/healthz`` (the process answers; no Redis), ``/readyz`` (Redis answers PING,
else 503), ``/metrics`` (Prometheus), ``POST /login`` and ``/logout`` (the dashboard's
cookie), and the dashboard at ``/``. Stateless: run as many processes as needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_runtime import __version__
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.gateway import api, dashboard
from agent_runtime.gateway.auth import COOKIE, TokenTable, cookie_options
from agent_runtime.gateway.limits import BodyLimit, Timing
from agent_runtime.gateway.problems import (
    Problem,
    on_error,
    on_http_error,
    on_invalid,
    on_problem,
)
from agent_runtime.gateway.runtime import GatewayRuntime
from agent_runtime.gateway.settings import GatewaySettings
from agent_runtime.observability.gateway_metrics import CONTENT_TYPE_LATEST, GatewayMetrics

DESCRIPTION = (
    "Publish requests to an agent-runtime pipeline, follow them hop by hop (SSE), approve "
    "risky steps, see the fleet and recover dead letters. Authenticate with "
    "`Authorization: Bearer TOKEN`; scopes: submit, read, approve, admin. Errors are "
    "application/problem+json."
)


def create_app(settings: GatewaySettings, *, pipeline: Pipeline, redis_url: str) -> FastAPI:
    """The app for ``pipeline`` on the Redis server at ``redis_url``. The Redis client, the
    shared reply reader and the followers are made when the app starts (its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = GatewayRuntime(pipeline, settings, redis_url, metrics=app.state.metrics)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        title="agent-runtime gateway",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/v1/docs",
        redoc_url=None,
        openapi_url="/v1/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = TokenTable(settings)
    app.state.metrics = GatewayMetrics()
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_error)
    app.include_router(api.router)
    app.include_router(_probes())
    app.include_router(dashboard.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Timing, metrics=app.state.metrics)
    return app


def _probes() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["probes"], summary="The process answers (no Redis needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        tags=["probes"],
        summary="Redis answers (503 otherwise)",
        responses={503: {"description": "Redis does not answer"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        if await request.app.state.runtime.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "detail": "Redis does not answer"}, 503)

    @router.get("/metrics", tags=["probes"], summary="Prometheus metrics of this process")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Form field ``token``: a valid token is kept in the HttpOnly, SameSite=Strict
        cookie and the browser goes to ``/``; an invalid one back to ``/?login=failed``."""
        body = (await request.body()).decode("utf-8", "replace")
        try:
            token = (parse_qs(body, max_num_fields=10).get("token") or [""])[0]
        except ValueError:  # more fields than a login form has
            token = ""
        if request.app.state.tokens.find(token) is None:
            return RedirectResponse("/?login=failed", status_code=303)
        response = RedirectResponse("/", status_code=303)
        secure = request.app.state.settings.secure_cookie
        response.set_cookie(COOKIE, token, **cookie_options(secure))
        return response

    @router.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        secure = request.app.state.settings.secure_cookie
        response.delete_cookie(COOKIE, **cookie_options(secure))
        return response

    return router
