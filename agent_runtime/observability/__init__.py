"""Logs, metrics, traces and operator views. The only package that configures structlog or
creates Prometheus metrics.

* :func:`configure_logging` -- structlog JSON/console with bound message context, redacted.
* :class:`Redactor` / :func:`redact` -- secret removal for logs, dead letters, traces, reports.
* :class:`Metrics` / :class:`PrometheusObserver` -- per-process Prometheus metrics.
* :class:`TraceContextMiddleware` -- W3C traceparent per hop, OpenTelemetry spans if installed.
"""

from typing import TYPE_CHECKING, Any

from agent_runtime.observability.logging import configure_logging
from agent_runtime.observability.redaction import Redactor, redact
from agent_runtime.observability.tracing import TraceContextMiddleware

if TYPE_CHECKING:
    from agent_runtime.observability.metrics import Metrics, PrometheusObserver


def __getattr__(name: str) -> Any:
    """``Metrics`` and ``PrometheusObserver`` on first use: prometheus_client (and the
    http.server, wsgiref and email modules it imports) is loaded only by a process that
    serves metrics, not by every worker (docs/benchmarks.md "Issue 17: start time")."""
    if name in ("Metrics", "PrometheusObserver"):
        from agent_runtime.observability import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Metrics",
    "PrometheusObserver",
    "Redactor",
    "TraceContextMiddleware",
    "configure_logging",
    "redact",
]
