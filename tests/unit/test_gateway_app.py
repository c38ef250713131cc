"""The gateway app in process, for what needs no Redis: CORS is off unless configured, the
OpenAPI schema lists the API with its problem answers, /healthz answers."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from agent_runtime.gateway.app import create_app
from agent_runtime.gateway.settings import GatewaySettings
from tests.fixtures.agents import echo_sink_pipeline

ORIGIN = "https://ops.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}


def app_with(**settings: object) -> TestClient:
    pipeline = echo_sink_pipeline("t" + uuid.uuid4().hex[:8])
    app = create_app(
        GatewaySettings.model_validate(settings),
        pipeline=pipeline,
        redis_url="redis://127.0.0.1:1",  # never reached: no lifespan, no Redis call
    )
    return TestClient(app)


def test_cors_is_off_unless_configured() -> None:
    client = app_with()
    response = client.options("/v1/requests", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers
    answered = client.get("/healthz", headers={"Origin": ORIGIN})
    assert answered.status_code == 200
    assert "access-control-allow-origin" not in answered.headers


def test_configured_origins_may_call() -> None:
    client = app_with(cors_origins=[ORIGIN])
    response = client.options(
        "/v1/requests", headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/v1/requests", headers={**PREFLIGHT, "Origin": "https://evil.test"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.test"


def test_the_schema_lists_the_api() -> None:
    schema = app_with().get("/v1/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/requests",
        "/v1/requests/{cid}",
        "/v1/requests/{cid}:wait",
        "/v1/requests/{cid}/events",
        "/v1/approvals",
        "/v1/requests/{cid}/approvals",
        "/v1/status",
        "/v1/dead-letters",
        "/v1/dead-letters/{letter_id}",
        "/v1/dead-letters/{letter_id}:replay",
        "/v1/dead-letters:purge",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    post = paths["/v1/requests"]["post"]
    assert "application/problem+json" in post["responses"]["401"]["content"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
