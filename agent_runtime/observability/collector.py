"""Periodic collection of stream state into gauges: consumer-group lag, pending count and
oldest-pending age of each inbox a worker consumes (XINFO GROUPS + XPENDING summary)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import structlog

from agent_runtime.observability.inspect import group_views
from agent_runtime.observability.metrics import Metrics
from agent_runtime.transport.inspect import RuntimeReader


class StreamCollector:
    """Polls ``streams`` every ``interval`` seconds into ``metrics``; run it as a task."""

    def __init__(
        self, reader: RuntimeReader, metrics: Metrics, streams: Sequence[str], interval: float = 5.0
    ) -> None:
        self.reader = reader
        self.metrics = metrics
        self.streams = list(streams)
        self.interval = interval
        self.log = structlog.get_logger("agent_runtime.metrics")

    async def collect(self) -> None:
        """One round: read every stream's groups and set the gauges."""
        for stream in self.streams:
            self.metrics.stream_length.labels(stream).set(await self.reader.stream_length(stream))
            for group in await group_views(self.reader, stream, consumers=False):
                labels = (stream, group["group"])
                self.metrics.pending.labels(*labels).set(group["pending"])
                if group["lag"] is not None:
                    self.metrics.lag.labels(*labels).set(group["lag"])
                self.metrics.oldest_pending.labels(*labels).set(
                    group["oldest_pending_age_s"] or 0.0
                )

    async def run(self) -> None:
        while True:
            try:
                await self.collect()
            except Exception as exc:  # a metrics hiccup never stops the worker
                self.log.warning("stream_metrics_failed", error=repr(exc))
            await anyio.sleep(self.interval)
