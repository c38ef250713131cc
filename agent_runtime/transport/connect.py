"""Create the Redis client from a URL: ``redis://``, ``rediss://``, ``unix://`` or, for Redis
Cluster, ``redis+cluster://`` / ``rediss+cluster://`` (any node of the cluster).

Connection behaviour under network faults (docs/operations.md, "Connection drops"):

* One bounded pool per client (:data:`MAX_CONNECTIONS`, ``?max_connections=N`` in the URL
  overrides it); a caller that finds every connection busy queues, first come first served,
  up to :data:`POOL_TIMEOUT` seconds (redis-py's default pool raises "Too many connections").
  So a server that drops every client sees at most that many reconnects per drop and client.
* redis-py retries a command whose connection broke :data:`COMMAND_RETRIES` times (its
  default is 10, and each retry's connect is retried 10 times again: about a hundred
  connection attempts per command while the server is away).
* New sockets open through the pool's :class:`ReconnectGate`: after a failed attempt the
  next one waits a jittered exponential delay (``Backoff``, reset by the first success);
  connects asked for meanwhile fail at once, and their callers back off in their own loops.

Per command, this module skips redis-py 8 work nothing reads (issue 17, low request rates):
a free pool slot is taken without an ``asyncio.timeout``; check-out and return make no
metric calls and no release event when redis-py's own metrics are off and no credential
provider re-authenticates (``GatedPool._lean``); a send the kernel takes whole makes no
``asyncio.wait_for`` task (only a send that leaves bytes buffered can wait, and only it is
bounded by ``socket_timeout``). Measured together with the worker's check of a partial batch
in its read loop (docs/benchmarks.md "Issue 17: low-rate CPU per message"): a no-op stage
at batch 4, 441-448 k -> 389 k instructions per message (-12 %); a forwarding stage
628-634 k -> 579-581 k (-8 %); at 200 requests/s ~725 -> ~615 us worker CPU per message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from redis.asyncio import Connection as AsyncConnection
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterDownError, OutOfMemoryError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_runtime.backoff import Backoff
from agent_runtime.transport.fastpack import use_hiredis_packing
from agent_runtime.transport.tls import client_options

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Connections per process and URL; a worker's loops use a handful, handlers share the rest.
MAX_CONNECTIONS = 10
#: Seconds a command waits for a free pooled connection before ConnectionError.
POOL_TIMEOUT = 20.0
#: Transparent re-sends of a command whose connection broke (one new connection each).
COMMAND_RETRIES = 2
#: Seconds a socket connect may take.
CONNECT_TIMEOUT = 5.0
#: Errors that mean "not now" rather than "never" (connection, loading, full, failing over).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # includes BusyLoadingError (LOADING)
    RedisTimeoutError,
    OSError,
    TimeoutError,
    OutOfMemoryError,
    TryAgainError,
    ClusterDownError,  # includes MasterDownError
)


@dataclass(frozen=True)
class Connection:
    redis: Any  # Redis | RedisCluster: same command surface for what the runtime uses
    cluster: bool
    url: str


def connect(url: str, **kwargs: Any) -> Connection:
    """A client for ``url``; bytes in, bytes out (``decode_responses=False``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{redact_url(url)!r} is not a Redis URL (redis://, rediss://, unix://, "
            "redis+cluster://)"
        )
    retry = Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), COMMAND_RETRIES)
    options: dict[str, Any] = {
        "health_check_interval": 30,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": retry,
        **client_options(url),  # TLS (rediss://): verified, AGENT_RUNTIME_REDIS_TLS_* settings
        **kwargs,
    }
    if scheme in CLUSTER_SCHEMES:
        client: Any = RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
        return Connection(client, True, url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
    options = {"max_connections": MAX_CONNECTIONS, "timeout": POOL_TIMEOUT, **options}
    client = Redis.from_pool(GatedPool.from_url(url, **options))
    use_hiredis_packing(client)
    return Connection(client, False, url)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot serve *now* (connection lost or refused,
    timeout, LOADING, BUSY, OOM, ...): wait and try again, nothing is wrong with the request.
    (redis-py turns OOM, LOADING, TRYAGAIN, CLUSTERDOWN and MASTERDOWN replies into their own
    classes, with the code cut off the message.)"""
    return isinstance(exc, UNAVAILABLE) or (
        isinstance(exc, ResponseError) and str(exc).startswith("BUSY ")
    )


def out_of_memory(exc: object) -> bool:
    """An OOM refusal (``maxmemory`` reached with ``noeviction``): the write did not happen."""
    return isinstance(exc, OutOfMemoryError)


class ReconnectGate:
    """Paces the socket connects of one pool. While connects succeed they run freely. After a
    failure, one attempt at a time is made, each after the backoff's next delay; a connect
    asked for meanwhile fails at once with the last attempt's error (no socket), so its caller backs
    off in its own loop instead of queueing. The first success resets the backoff. A process
    whose server is away so opens a few sockets in its first seconds, then one per ``cap``
    seconds, however many tasks want a connection."""

    def __init__(
        self, backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backoff = backoff or Backoff(initial=0.2, cap=2.0)
        self.clock = clock
        self.attempts = 0  # sockets this pool tried to open (tests and benchmarks read it)
        self.closings = 0  # times the pool was told to drop its sockets (see GatedPool.disconnect)
        self._failing = False
        self._trying = False
        self._not_before = 0.0
        self._last: Exception | None = None

    def _again(self) -> Exception:
        """The last attempt's error once more (same type and text, so callers and the CLI
        tell "refused" from "unknown host" as usual), without opening a socket."""
        last = self._last
        if last is not None:
            try:
                return type(last)(*last.args)  # e.g. AuthenticationError stays one
            except Exception:  # noqa: S110 - a type that cannot be rebuilt from its args
                pass
        return RedisConnectionError(f"server unreachable (last attempt: {last!r})")

    async def open(self, connect: Callable[[], Awaitable[None]]) -> None:
        if not self._failing:
            await self._attempt(connect)
            return
        if self._trying or self._not_before > self.clock():
            raise self._again()
        self._trying = True
        try:
            await self._attempt(connect)
        finally:
            self._trying = False

    async def _attempt(self, connect: Callable[[], Awaitable[None]]) -> None:
        self.attempts += 1
        try:
            await connect()
        except Exception as exc:
            self._last = exc
            self._failing = True
            self._not_before = self.clock() + self.backoff.next_delay()
            raise
        self._failing = False
        self.backoff.reset()


class GatedPool(ConnectionPool):
    """A bounded pool: at most ``max_connections`` connections, handed out first come, first
    served (a caller that finds them all busy queues for up to ``timeout`` seconds; redis-py's
    blocking pool lets a task that releases a connection take it straight back, so a loop of
    blocking reads can starve everyone else). New sockets open through one ReconnectGate."""

    def __init__(self, *, timeout: float | None = POOL_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.gate = ReconnectGate()
        self._slots = asyncio.Semaphore(self.max_connections)  # FIFO since Python 3.11.1
        self._holders: set[Any] = set()
        base: Any = self.connection_class
        self.connection_class = _gated_class(base)
        # Check-out and return without redis-py 8's per-command bookkeeping (five metric
        # calls and a release event per command) when nothing listens: its metrics are off
        # and no credential provider re-authenticates on release (see _checkout).
        self._lean = (
            _LEAN_API
            and _redis_metrics_off()
            and not self.connection_kwargs.get("credential_provider")
        )

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        connection.reconnect_gate = self.gate
        return connection

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._slots.locked():  # all busy: queue, bounded (a free slot needs no timer)
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # returns at once
        except TimeoutError:
            raise RedisConnectionError(
                f"no connection free within {self.timeout}s "
                f"(all {self.max_connections} in use; raise ?max_connections= in the URL)"
            ) from None
        try:
            if self._lean:
                connection = await self._checkout()
            else:
                connection = await super().get_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        self._holders.add(connection)
        return connection

    async def _checkout(self) -> Any:
        """redis-py's ``get_connection`` without its metric calls: an idle connection (or a
        new one), made sure to be connected and clean (``ensure_connection``: reconnects a
        dropped one, refuses one with unread data). Measured: docs/benchmarks.md, "Issue 17:
        low-rate CPU per message"."""
        async with self._lock:
            connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close every socket; a connect still under way when this is called closes its socket
        as soon as it opens (see ``_gated_class``), so a pool closed while a cancelled task
        was still connecting leaks nothing."""
        self.gate.closings += 1
        await super().disconnect(inuse_connections)

    async def release(self, connection: Any) -> None:
        try:
            if self._lean:  # redis-py's release without its event and metric calls
                async with self._lock:
                    self._in_use_connections.remove(connection)
                    if connection.should_reconnect():
                        await connection.disconnect()
                    self._available_connections.append(connection)
            else:
                await super().release(connection)
        finally:
            if connection in self._holders:  # not when get_connection itself gave up on it
                self._holders.discard(connection)
                self._slots.release()


#: the redis-py pool internals the lean path calls (redis-py 8.1 has them; a release without
#: one of them takes redis-py's own path)
_LEAN_API = all(
    hasattr(ConnectionPool, name) for name in ("get_available_connection", "ensure_connection")
) and hasattr(AsyncConnection, "should_reconnect")


def _redis_metrics_off() -> bool:
    """Whether redis-py's own OpenTelemetry metrics are off (they are unless the application
    set them up, before connecting)."""
    try:
        from redis.asyncio.observability import recorder
    except ImportError:  # a redis-py without them
        return True
    try:
        return recorder._get_or_create_collector() is None
    except Exception:
        return False


@cache
def _gated_class(base: Any) -> type:
    async def _connect(self: Any) -> None:
        gate = getattr(self, "reconnect_gate", None)  # None: made outside the pool (a reader
        if gate is None:  # lane's own connection, which backs off by itself)
            await base._connect(self)
            return
        closings = gate.closings
        await gate.open(partial(base._connect, self))
        if gate.closings != closings:  # the pool closed its sockets while this one opened
            await self.disconnect(nowait=True)
            raise RedisConnectionError("the connection pool was closed while connecting")

    async def send_packed_command(
        self: Any, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """redis-py's send, without its ``asyncio.wait_for`` (a task and a timer per command)
        when the kernel took every byte: only a send that leaves bytes buffered can wait, so
        only that one is bounded by ``socket_timeout`` (low_rate.py: see the module text)."""
        if not self.socket_timeout or not self.is_connected:
            await base.send_packed_command(self, command, check_health)
            return
        if check_health:
            await self.check_health()
            if not self.is_connected:  # the health check's PING failed and disconnected
                await base.send_packed_command(self, command, False)
                return
        try:
            if isinstance(command, str):
                command = command.encode()
            writer = self._writer
            writer.writelines([command] if isinstance(command, bytes) else command)
            if writer.transport.get_write_buffer_size():  # drain may wait: bounded
                await asyncio.wait_for(writer.drain(), self.socket_timeout)
            else:  # nothing buffered: drain only reports a lost connection, never waits
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            number, text = ("UNKNOWN", exc.args[0]) if len(exc.args) == 1 else exc.args[:2]
            raise RedisConnectionError(f"Error {number} while writing to socket. {text}.") from exc
        except BaseException:  # half-sent: the connection cannot be used again
            await self.disconnect(nowait=True)
            raise

    return type(
        f"Gated{base.__name__}",
        (base,),
        {"_connect": _connect, "send_packed_command": send_packed_command},
    )


def redact_url(url: str) -> str:
    """``url`` without its password (safe to log or print)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    creds, _, host = rest.partition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
