"""A scripted local HTTP API server for tests: 127.0.0.1, port 0, a thread of its own.

Each POST to the API path pops the next scripted :class:`Reply` (or uses ``default``) and is
recorded with its monotonic arrival time, so tests can assert how many calls the client made
and how long it waited between them, without touching the network.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20

Body = dict[str, Any] | str | Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a JSON object (or a function of the request body) or raw text."""

    status: int = 200
    body: Body = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds the server waits before answering (client timeouts)

    def render(self, request: dict[str, Any]) -> bytes:
        body = self.body(request) if callable(self.body) else self.body
        return body.encode() if isinstance(body, str) else json.dumps(body).encode()


@dataclass(frozen=True)
class Recorded:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeAPI:
    """Answers POSTs to paths ending with ``path_suffix`` from a script of replies."""

    def __init__(self, path_suffix: str, default: Reply) -> None:
        self.path_suffix = path_suffix
        self.default = default
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def root_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def most_in_window(self, window: float) -> int:
        """The server's own rate count: the most requests that arrived within any ``window``
        seconds (any sliding window, so also any fixed bucket of that length)."""
        with self._lock:
            arrivals = sorted(r.at for r in self.requests)
        most, first = 0, 0
        for last, at in enumerate(arrivals):
            while at - arrivals[first] > window:
                first += 1
            most = max(most, last - first + 1)
        return most

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def start(self) -> FakeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @contextmanager
    def running(self) -> Iterator[FakeAPI]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            return self._script.popleft() if self._script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY or not self.path.split("?")[0].endswith(api.path_suffix):
                    self._send(404 if length <= MAX_BODY else 413, b'{"error": "not here"}', {})
                    return
                body = json.loads(self.rfile.read(length) or b"{}")
                recorded = Recorded(
                    time.monotonic(),
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                reply = api._next(recorded)
                if reply.delay:
                    api._stopping.wait(reply.delay)
                self._send(reply.status, reply.render(body), reply.headers)

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
