"""structlog set-up: call :func:`configure_logging` once per process, at start-up.

* JSON lines when the log stream (stderr) is not a terminal, a readable console otherwise;
  force either with ``json=True/False`` or ``AGENT_RUNTIME_LOG_FORMAT=json|console``.
* Level from ``AGENT_RUNTIME_LOG_LEVEL`` (default ``info``).
* The worker marks each handler task with its message (:func:`set_current_message`); every
  line logged in that task -- by the worker, the agent, providers or tools, through any
  ``structlog.get_logger()`` -- gets correlation_id, message_id, causation_id, agent and
  consumer. Context bound with ``structlog.contextvars`` is merged too.
* Every line passes the :class:`~agent_runtime.observability.redaction.Redactor` last, after
  exceptions were formatted, so secrets never reach the output.

Logs go to stderr: stdout stays free for command output (``status --json``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

from agent_runtime.errors import ConfigError
from agent_runtime.observability.redaction import Redactor, env_redactor

#: The message the current asyncio task handles, with the worker's consumer name. Set by the
#: worker at the start of each handler task (one ContextVar.set: the hot path stays lean); the
#: ids are added to a log line only when one is emitted (:func:`add_message_context`).
CURRENT_MESSAGE: ContextVar[tuple[Any, str] | None] = ContextVar(
    "agent_runtime_message", default=None
)

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def set_current_message(ctx: Any, consumer: str) -> None:
    """Mark ``ctx`` (a MessageContext) as the message of the current task, for every log line
    the task emits through structlog (agent code, providers, tools included)."""
    CURRENT_MESSAGE.set((ctx, consumer))


def add_message_context(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: correlation_id, message_id, causation_id, agent and consumer of the
    message the current task handles (fields already bound on the line win)."""
    current = CURRENT_MESSAGE.get()
    if current is None:
        return event
    ctx, consumer = current
    message = ctx.message
    event.setdefault("correlation_id", str(message.correlation_id))
    event.setdefault("message_id", str(message.message_id))
    event.setdefault("causation_id", str(message.causation_id or ""))
    event.setdefault("message_type", message.message_type)
    event.setdefault("agent", ctx.agent)
    event.setdefault("consumer", consumer)
    return event


def log_level(value: str | None = None) -> int:
    name = (value or os.environ.get("AGENT_RUNTIME_LOG_LEVEL") or "info").lower()
    if name not in LEVELS:
        raise ConfigError(f"AGENT_RUNTIME_LOG_LEVEL={name!r}: use one of {', '.join(LEVELS)}")
    return LEVELS[name]


def _wants_json(json: bool | None, stream: TextIO) -> bool:
    if json is not None:
        return json
    forced = os.environ.get("AGENT_RUNTIME_LOG_FORMAT", "").lower()
    if forced in ("json", "console"):
        return forced == "json"
    return not stream.isatty()


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at write time (test runners swap and close it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(
    json: bool | None = None,
    *,
    level: str | None = None,
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and the stdlib root logger, for libraries) for this process."""
    out: Any = stream or _CurrentStderr()
    redact = redactor or env_redactor()
    numeric = log_level(level)
    as_json = _wants_json(json, out)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        # format_exc_info (below) turns exceptions into text first: the renderer prints that
        # text; the plain formatter named so the output never depends on rich being importable
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_message_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact.processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(numeric, out, redact)


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(super().format(record))


def _configure_stdlib(level: int, stream: TextIO, redactor: Redactor) -> None:
    """Library logs (redis, httpx, anthropic) through the same redaction, at WARNING+."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_agent_runtime", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_RedactingFormatter(redactor))
    handler._agent_runtime = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))


def bind_message(**values: Any) -> Any:
    """Context manager binding ``values`` to every log line in the current task."""
    return structlog.contextvars.bound_contextvars(**values)
