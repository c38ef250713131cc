"""Logs, metrics, traces and operator views. The only package that configures structlog or
creates Prometheus metrics.

* :func:`configure_logging` -- structlog JSON/console with bound message context, redacted.
* :class:`Redactor` / :func:`redact` -- secret removal for logs, dead letters, traces, reports.
* :class:`Metrics` / :class:`PrometheusObserver` -- per-process Prometheus metrics.
* :class:`TraceContextMiddleware` -- W3C traceparent per hop, OpenTelemetry spans if installed.
"""

from agent_runtime.observability.logging import configure_logging
from agent_runtime.observability.metrics import Metrics, PrometheusObserver
from agent_runtime.observability.redaction import Redactor, redact
from agent_runtime.observability.tracing import TraceContextMiddleware

__all__ = [
    "Metrics",
    "PrometheusObserver",
    "Redactor",
    "TraceContextMiddleware",
    "configure_logging",
    "redact",
]
