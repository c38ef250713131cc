"""Prometheus metrics of one gateway process (``GET /metrics`` of ``agent-runtime serve``), on
a registry of their own: HTTP calls by route and status, latency, open SSE/WebSocket clients,
requests published, idempotent replays and rate-limited calls."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class GatewayMetrics:
    """The gateway's metrics; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "agent_runtime_gateway_http_requests",
            "HTTP calls answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "agent_runtime_gateway_http_request_seconds",
            "Seconds to answer an HTTP call (to the response start; SSE: to the headers)",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.sse_clients = Gauge(
            "agent_runtime_gateway_sse_clients", "Open Server-Sent Events streams", registry=r
        )
        self.ws_clients = Gauge(
            "agent_runtime_gateway_websocket_clients", "Open WebSocket connections", registry=r
        )
        self.published = Counter(
            "agent_runtime_gateway_requests_published",
            "Requests the gateway published",
            registry=r,
        )
        self.replayed = Counter(
            "agent_runtime_gateway_idempotent_replays",
            "POSTs answered with the correlation id of an earlier one (same Idempotency-Key)",
            registry=r,
        )
        self.limited = Counter(
            "agent_runtime_gateway_rate_limited",
            "Calls refused with 429 by the per-token rate limit",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
