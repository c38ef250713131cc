"""Liveness and readiness of one worker process, served next to ``/metrics`` on its metrics
port (docs/operations.md "Probes"):

* ``GET /healthz``: 200 while the worker's event loop is turning. A task on the loop stamps
  :attr:`Probes.beat` every second; the HTTP thread only compares that stamp with the clock,
  so the answer needs neither the loop nor Redis: a Redis outage never fails liveness (and
  never gets a pod restarted). 503 when the stamp is older than ``stale_after`` seconds (a
  loop blocked by a CPU-bound handler, a deadlock).
* ``GET /readyz``: 200 while the last readiness check, run on the loop every ``interval``
  seconds, found Redis reachable and the agent's consumer group on every inbox; 503 with the
  reason otherwise, when that check is older than it should be, and once the worker drains.
* ``GET /metrics``: the Prometheus exposition of the worker's registry.

Any other path is 404. Each request is answered by the server's thread from memory: a probe
costs microseconds of the worker's CPU (benchmarks/probe.py, docs/benchmarks.md "Probes").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from agent_runtime.errors import ConfigError
from agent_runtime.transport.inspect import RuntimeReader

STALE_ENV = "AGENT_RUNTIME_LIVENESS_STALE_SECONDS"
READY_INTERVAL_ENV = "AGENT_RUNTIME_READINESS_INTERVAL"
BEAT_INTERVAL = 1.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _seconds_from_env(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86_400:
        raise ConfigError(f"{name}={value!r} is not a number of seconds (0 < s < 86400)")
    return seconds


@dataclass
class Probes:
    """The probe state of one worker: written by tasks on its loop, read by the HTTP thread
    (single attribute reads and writes: no lock needed)."""

    agent: str
    group: str
    streams: Sequence[str]
    stale_after: float = 30.0
    interval: float = 2.0
    check_timeout: float = 2.0
    clock: Callable[[], float] = time.monotonic
    beat: float = field(default=0.0)
    ready_ok: bool = False
    ready_reason: str = "starting: Redis not checked yet"
    ready_at: float = 0.0
    draining: bool = False

    def __post_init__(self) -> None:
        self.beat = self.clock()  # alive from creation: start-up has its own grace period

    @classmethod
    def from_env(cls, agent: str, group: str, streams: Sequence[str]) -> Probes:
        return cls(
            agent,
            group,
            list(streams),
            stale_after=_seconds_from_env(STALE_ENV, 30.0),
            interval=_seconds_from_env(READY_INTERVAL_ENV, 2.0),
        )

    # -------------------------------------------------------------- answers (HTTP thread)
    def liveness(self) -> tuple[bool, str]:
        age = self.clock() - self.beat
        if age > self.stale_after:
            return False, f"event loop stalled: last turn {age:.1f}s ago (> {self.stale_after}s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: stopping after SIGTERM"
        if not self.ready_ok:
            return False, self.ready_reason
        age = self.clock() - self.ready_at
        limit = 2 * self.interval + self.check_timeout + 1
        if age > limit:
            return False, f"readiness not checked for {age:.1f}s (event loop busy or stalled)"
        return True, "ok"

    # ---------------------------------------------------------------- tasks (event loop)
    async def run(self, redis: Any) -> None:
        """Stamp the loop and check readiness until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._beat)
            tg.start_soon(self._check_ready, RuntimeReader(redis))

    async def _beat(self) -> None:
        while True:
            self.beat = self.clock()
            await anyio.sleep(BEAT_INTERVAL)

    async def _check_ready(self, reader: RuntimeReader) -> None:
        log = structlog.get_logger("agent_runtime.probes")
        while True:
            ok, reason = await self.check(reader)
            if ok != self.ready_ok:
                (log.info if ok else log.warning)("readiness_changed", ready=ok, reason=reason)
            self.ready_ok, self.ready_reason, self.ready_at = ok, reason, self.clock()
            await anyio.sleep(self.interval)

    async def check(self, reader: RuntimeReader) -> tuple[bool, str]:
        """One readiness check: Redis answers and the group exists on every inbox."""
        try:
            with anyio.fail_after(self.check_timeout):
                for stream in self.streams:
                    names = {g.name for g in await reader.groups(stream)}
                    if self.group not in names:
                        return False, f"consumer group {self.group!r} missing on {stream}"
        except TimeoutError:
            return False, f"Redis did not answer within {self.check_timeout}s"
        except Exception as exc:  # unreachable, refused, auth: the reason is the answer
            return False, f"Redis unreachable: {type(exc).__name__}: {exc}"[:300]
        return True, "ok"


# -------------------------------------------------------------------------- HTTP server
def make_app(registry: CollectorRegistry, probes: Probes | None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the metrics port: /metrics, /healthz, /readyz; 404 for the rest."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if probes is not None and path in ("/healthz", "/readyz"):
            ok, reason = probes.liveness() if path == "/healthz" else probes.readiness()
            body = (reason + "\n").encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, _text_headers(body))
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]
        body = b"not found: try /metrics, /healthz or /readyz\n"
        start_response("404 Not Found", _text_headers(body))
        return [body]

    return app


def _text_headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line."""


def serve(
    port: int,
    registry: CollectorRegistry,
    probes: Probes | None,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped and probed remotely
) -> WSGIServer:
    """Serve :func:`make_app` on ``addr:port`` from a daemon thread; returns the server."""
    server = make_server(addr, port, make_app(registry, probes), _Server, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server
