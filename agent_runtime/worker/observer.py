"""Hooks the worker calls at each step of a delivery. The default does nothing; the
observability package provides a Prometheus/structlog implementation. Keep them cheap: they
run on the per-message path."""

from __future__ import annotations

from agent_runtime.agent import MessageContext
from agent_runtime.transport.streams import Entry


class Observer:
    """No-op base: subclass and override what you need."""

    def handled(self, ctx: MessageContext, seconds: float) -> None: ...

    def failed(self, ctx: MessageContext, error: BaseException, seconds: float) -> None: ...

    def retried(self, ctx: MessageContext, reason: str) -> None: ...

    def dead_lettered(self, entry: Entry, reason: str, message_type: str | None) -> None: ...

    def duplicate_dropped(self, entry: Entry) -> None: ...

    def reclaimed(self, stream: str, count: int, deleted: int) -> None: ...

    def in_flight(self, count: int) -> None: ...

    def committed(self, messages: int, seconds: float) -> None: ...
