"""Network faults for tests, on loopback only.

* :class:`LossyProxy`: a TCP proxy in front of a Redis server (unix socket) that forwards
  every command and, with probability ``drop_rate``, swallows the server's reply and closes
  the client's connection instead: the command ran, its caller never hears of it (an
  ambiguous write). ``drop_rate=0`` makes a plain counting proxy.
* :class:`ClientKiller`: ``CLIENT KILL TYPE normal SKIPME yes`` every ``interval`` seconds, as
  a server or a load balancer that drops its clients.

Both run in a background thread (their own event loop / a plain loop), so the processes and
event loops under test see them as an outside party.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass
class LossyProxy:
    """``redis://127.0.0.1:PORT`` -> the server at ``upstream`` (a unix socket path)."""

    upstream: str
    drop_rate: float = 0.0
    seed: int = 0
    accepted: int = 0  # client connections the proxy took
    replies: int = 0  # server-to-client chunks forwarded
    dropped: int = 0  # chunks swallowed (and their connection closed)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> LossyProxy:
        self._rng.seed(self.seed)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            server_r, server_w = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            client_w.close()
            return
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w, lossy=False)),
            asyncio.create_task(self._pump(server_r, client_w, lossy=True)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, lossy: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if lossy:
                    if self._rng.random() < self.drop_rate:
                        self.dropped += 1
                        return  # the command ran; its reply never arrives
                    self.replies += 1
                writer.write(chunk)
                await writer.drain()


@dataclass
class ClientKiller:
    """Kill every normal client of the server at ``url`` each ``interval`` seconds (not its
    own connection, which also serves :meth:`connections_received`)."""

    url: str
    interval: float = 2.0
    kills: list[int] = field(default_factory=list)  # clients killed per round
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _redis: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._redis = redis.Redis.from_url(self.url, single_connection_client=True)

    def connections_received(self) -> int:
        """The server's ``total_connections_received`` (INFO stats)."""
        with self._lock:
            return int(self._redis.info("stats")["total_connections_received"])

    def start(self) -> ClientKiller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self.kills.append(int(self._redis.client_kill_filter(_type="normal", skipme=True)))
