"""agent-runtime: typed multi-agent pipelines over Redis Streams.

The public API most users need::

    from agent_runtime import Agent, MessageContext, Retry, Reject, Skip
"""

import sys as _sys


def _import_structlog_without_rich() -> None:
    """Import structlog with ``rich`` hidden from it, unless something imported rich already.

    ``import structlog`` imports ``structlog.dev`` and ``structlog.tracebacks``, which import
    rich (when it is installed, as the CLI's tables need it) for pretty tracebacks; with the
    CLI's lazy command modules, 222 M of the 2,473 M instructions a worker ran to start (-9.0 %,
    docs/benchmarks.md "Issue 17: start time"). The runtime never uses them: exceptions are
    formatted by ``format_exc_info`` before the renderer (agent_runtime/observability/
    logging.py, which names the plain formatter), so the output is the same.
    ``sys.modules["rich"] = None`` makes ``import rich`` fail inside structlog's ``try: import
    rich / except ImportError`` only; the entry is removed right after, so rich imports
    normally later (the CLI's tables). A program that wants structlog's rich tracebacks
    imports rich (or structlog) before agent_runtime."""
    if "structlog" in _sys.modules or "rich" in _sys.modules:
        return
    _sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del _sys.modules["rich"]


_import_structlog_without_rich()

from agent_runtime.agent import Agent, AgentRuntime, MessageContext, NoConfig, Services  # noqa: E402
from agent_runtime.errors import AgentRuntimeError, ConfigError, Reject, Retry, Skip  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentRuntime",
    "AgentRuntimeError",
    "ConfigError",
    "MessageContext",
    "NoConfig",
    "Reject",
    "Retry",
    "Services",
    "Skip",
    "__version__",
]
