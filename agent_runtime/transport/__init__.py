"""The only code that talks to Redis."""

import sys


def _import_redis_without_otel_sdk() -> None:
    """Import redis with ``opentelemetry.sdk.metrics`` hidden from it, unless something
    imported either already.

    redis 8 (``redis.observability.providers``) imports the OpenTelemetry SDK's metrics at
    import time wherever the SDK is installed (the ``otel`` extra, a dev install), only to set
    a module flag and a type name that nothing reads: 131 M instructions of a worker's ~1,950 M
    start (docs/benchmarks.md "Issue 17: start time", second pass). redis-py's own OTel metrics
    still work: they are off unless configured, and then import ``opentelemetry.metrics``
    (the API, not hidden) when they start. The entry is removed right after, so the SDK
    imports normally later (the runtime's tracing, the application's own)."""
    hidden = "opentelemetry.sdk.metrics"
    if "redis" in sys.modules or hidden in sys.modules:
        return
    sys.modules[hidden] = None  # type: ignore[assignment]
    try:
        import redis  # noqa: F401
    finally:
        del sys.modules[hidden]


_import_redis_without_otel_sdk()

from agent_runtime.transport.connect import Connection, connect, redact_url  # noqa: E402
from agent_runtime.transport.streams import (  # noqa: E402
    Commit,
    DeadLetter,
    Entry,
    StreamBus,
    original_fields,
)

__all__ = [
    "Commit",
    "Connection",
    "DeadLetter",
    "Entry",
    "StreamBus",
    "connect",
    "original_fields",
    "redact_url",
]
