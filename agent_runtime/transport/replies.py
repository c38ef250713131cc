"""One reader per client for the reply streams of all its waiting requests.

A request's reply stream is its own key (``keys.reply(cid)``); waiting for a reply means
reading that stream from ``0-0`` until a decodable entry arrives. :class:`ReplyReader`
multiplexes every wait of one client over a small fixed number of connections:

* Waits are spread over ``lanes`` lanes by a hash of the stream name. A lane owns one
  connection of its own (not from the client's pool) and runs one task while it has waiters:
  ``XREAD COUNT 10 BLOCK block_ms STREAMS <every waited stream> <last id read of each>``.
  Each waiter has its own future, resolved with the first decodable entry of its stream.
  A lane without waiters for a second ends its task and closes its connection.
* A waiter that joins while its lane's read is blocked wakes the read with
  ``CLIENT UNBLOCK <lane connection id>`` (sent on the client's shared connection; one wake in
  flight per lane, retried every few ms while the read has not reached the server yet). The
  next read includes the new stream. Where ``CLIENT UNBLOCK`` is refused (an ACL), lanes fall
  back to short reads (``SHORT_BLOCK_MS``).
* A connection error, a timeout, a restart (LOADING) or a kill ends the lane's read; the lane
  reconnects after a jittered exponential backoff (reset after a successful read) and resumes
  every stream from the last id it read: replies stored meanwhile are found, none is skipped.
  Waiters never see the error; their own timeout bounds the wait.
* A reply key that holds another type (WRONGTYPE fails the whole multi-key XREAD) fails the
  waiters of that key alone with :class:`RequestError`; the lane goes on with the others.
* Redis Cluster cannot read keys of different slots in one command: there one lane polls
  (non-blocking ``XREAD`` per stream, pipelined; ``POLL_INTERVAL`` between empty rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Iterable
from typing import Any

import anyio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_runtime.backoff import Backoff
from agent_runtime.codec import Codec, Decoded
from agent_runtime.errors import DecodeError, RequestError

DEFAULT_LANES = 2
BLOCK_MS = 5_000  # one read's BLOCK while the set of waited streams does not change
SHORT_BLOCK_MS = 200  # when waking a blocked read is not allowed
COUNT = 10  # entries per stream per read (a reply stream holds one or two)
POLL_INTERVAL = 0.1  # cluster: seconds between rounds that found nothing
POLL_CHUNK = 1_000  # cluster: XREADs per pipeline
READER_NAME = "agent-runtime-replies"
CLOSE_WAIT = 1.0  # seconds aclose waits for a lane's task to end
IDLE = 1.0  # seconds a lane without waiters keeps its connection
HEALTHY = 1.0  # seconds a connection must have lived for its loss to reset the backoff
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)  # LOADING is a ConnectionError
TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


class ReplyReader:
    """Waits for replies on a client's behalf. One per client; :meth:`aclose` with it."""

    def __init__(
        self,
        redis: Any,
        codec: Codec,
        *,
        lanes: int = DEFAULT_LANES,
        block_ms: int = BLOCK_MS,
        name: str = READER_NAME,
    ) -> None:
        self.redis = redis
        self.codec = codec
        self.block_ms = block_ms
        self.name = name
        pool = getattr(redis, "connection_pool", None)
        self.polling = pool is None or not hasattr(pool, "connection_kwargs")  # RedisCluster
        lane_type = PollingLane if self.polling else BlockingLane
        self.lanes: list[Lane] = [lane_type(self) for _ in range(1 if self.polling else lanes)]
        self.tasks: set[asyncio.Task[None]] = set()  # wake-ups in flight (kept referenced)

    async def wait(self, stream: str, timeout: float) -> Decoded:
        """The first decodable entry of ``stream``; TimeoutError after ``timeout`` seconds."""
        lane = self.lanes[zlib.crc32(stream.encode()) % len(self.lanes)]
        if lane.closed:
            raise RequestError("the client was closed")
        future = lane.add(stream)
        try:
            with anyio.move_on_after(timeout):
                return await future
        finally:
            lane.discard(stream, future)
        raise TimeoutError(f"no reply on {stream} within {timeout}s")

    def waiting(self) -> int:
        """Streams waited on right now (tests, benchmarks)."""
        return sum(len(lane.waiters) for lane in self.lanes)

    def connections(self) -> int:
        """Open connections of the reader's own (lanes; 0 when polling a cluster)."""
        return sum(1 for lane in self.lanes if lane.connected())

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        """Stop reading; waits still waiting fail with RequestError (the client closed)."""
        wakes = list(self.tasks)
        for task in wakes:
            task.cancel()
        for lane in self.lanes:
            await lane.aclose()
        # before the caller closes the pool: a wake-up whose cancellation redis-py's connect
        # swallowed would otherwise open a connection after the pool closed, and leak it
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WAIT):
            await asyncio.gather(*wakes, return_exceptions=True)

    def new_connection(self) -> Any:
        """A connection made by the client's pool (same address, TLS, credentials, and
        whatever the pool adds: its reconnect gate, hiredis packing), not handed out by it
        (not counted against its size), without redis-py's own retries or health checks (the
        lane reconnects by itself) and unnamed (named after connecting, see ``identify``)."""
        conn = self.redis.connection_pool.make_connection()
        conn.client_name = None
        conn.health_check_interval = 0
        conn.socket_timeout = self.block_ms / 1000 + 10
        conn.retry = Retry(NoBackoff(), 0)
        return conn


class Lane:
    """Waiters of a share of the streams and the task that reads for them."""

    def __init__(self, reader: ReplyReader) -> None:
        self.reader = reader
        self.waiters: dict[str, list[asyncio.Future[Decoded]]] = {}
        self.last: dict[str, bytes] = {}  # stream -> last entry id read
        self.task: asyncio.Task[None] | None = None
        self.backoff = Backoff(0.05, 1.0)  # equal jitter: each delay in [d/2, d]
        self.connected_at = -HEALTHY  # monotonic time of the last (re)connection
        self.arrived: asyncio.Event | None = None  # set when a waiter joins an idle lane
        self.closed = False

    def add(self, stream: str) -> asyncio.Future[Decoded]:
        future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        joined = stream not in self.waiters
        self.waiters.setdefault(stream, []).append(future)
        if joined:
            self.last[stream] = b"0-0"
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        elif self.arrived is not None:
            self.arrived.set()
        elif joined:
            self.joined()
        return future

    def joined(self) -> None:
        """A new stream joined while the task runs (a blocking lane wakes its read)."""

    def discard(self, stream: str, future: asyncio.Future[Decoded]) -> None:
        futures = self.waiters.get(stream)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self.waiters[stream]
            self.last.pop(stream, None)

    async def run(self) -> None:
        """Read while anyone waits. With no waiters for ``IDLE`` seconds, close the connection
        (a client whose owner closes only its Redis client leaks nothing) and end, unless a
        waiter joined meanwhile."""
        try:
            while self.waiters and not self.closed:
                while self.waiters and not self.closed:
                    await self.attempt()
                if self.closed or not await self.idle():
                    await self.lost()  # the loop condition sees a waiter that joined meanwhile
        except BaseException:
            await self.lost()
            raise

    async def idle(self) -> bool:
        """Wait up to ``IDLE`` seconds for a waiter; whether one came."""
        self.arrived = asyncio.Event()
        with anyio.move_on_after(IDLE):
            await self.arrived.wait()
        self.arrived = None
        return bool(self.waiters)

    async def attempt(self) -> None:
        try:
            await self.step()
        except TRANSIENT:
            await self.lost()
            if time.monotonic() - self.connected_at >= HEALTHY:
                self.backoff.reset()  # a blip after a healthy while starts from the base
            await anyio.sleep(self.backoff.next_delay())
        except Exception as exc:  # last resort: never leave waiters hanging on a bug
            self.fail(list(self.waiters), RequestError(f"reading replies failed: {exc!r}"))

    async def step(self) -> None:
        try:
            await self.read()
        except ResponseError as exc:
            await self.refused(exc)
        else:
            self.backoff.reset()

    async def read(self) -> None:
        raise NotImplementedError

    async def lost(self) -> None:
        """The connection failed: drop it (the next read reconnects)."""

    def connected(self) -> bool:
        return False

    async def aclose(self) -> None:
        """Fail the waiters, stop the task, close the connection. The task is not trusted to
        end on ``cancel()`` alone (redis-py's connect can swallow a cancellation): it also
        finds no waiter and the closed flag, and its connection closed under it."""
        self.closed = True
        self.fail(list(self.waiters), RequestError("the client was closed"))
        if self.task is not None:
            self.task.cancel()
            await self.lost()
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WAIT):
                await asyncio.gather(self.task, return_exceptions=True)
        await self.lost()

    def deliver(self, response: Any) -> int:
        """Resolve the waiters of every stream in an XREAD reply with its first decodable
        entry (undecodable ones are skipped for good); returns how many streams resolved."""
        resolved = 0
        for key, entries in _stream_items(response):
            stream = key.decode() if isinstance(key, bytes) else str(key)
            if stream not in self.waiters:
                continue
            for entry_id, fields in entries:
                self.last[stream] = entry_id
                try:
                    decoded = self.reader.codec.decode(_field_dict(fields), stream)
                except DecodeError:
                    continue
                self.settle(stream, decoded)
                resolved += 1
                break
        return resolved

    def fail(self, streams: Iterable[str], error: Exception) -> None:
        for stream in streams:
            self.settle(stream, error)

    def settle(self, stream: str, outcome: Decoded | Exception) -> None:
        """Resolve every waiter of ``stream`` with a reply or an error; forget the stream."""
        for future in self.waiters.pop(stream, []):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self.last.pop(stream, None)

    async def refused(self, exc: ResponseError) -> None:
        """An error reply to a read: transient ones back off; WRONGTYPE fails the waiters of
        the keys that are not streams; anything else fails the lane's waiters."""
        text = str(exc)
        if text.startswith(TRANSIENT_REPLIES):
            await anyio.sleep(self.backoff.next_delay())
        elif text.startswith("WRONGTYPE"):
            if not await self.fail_wrong_types():  # changed back meanwhile: read again later
                await anyio.sleep(self.backoff.next_delay())
        else:
            self.fail(list(self.waiters), RequestError(f"reading replies failed: {text}"))

    async def fail_wrong_types(self) -> int:
        """Fail the waiters of every waited key that holds another type; how many keys."""
        streams = list(self.waiters)
        async with self.reader.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.type(stream)
            kinds = await pipe.execute()
        failed = 0
        for stream, kind in zip(streams, kinds, strict=True):
            name = kind.decode() if isinstance(kind, bytes) else str(kind)
            if name not in ("stream", "none"):
                failed += 1
                self.fail(
                    [stream], RequestError(f"reply key {stream} holds a {name}, not a stream")
                )
        return failed


class BlockingLane(Lane):
    """One connection; one blocking XREAD over all its streams at a time."""

    def __init__(self, reader: ReplyReader) -> None:
        super().__init__(reader)
        self.conn: Any = None
        self.conn_id: int | None = None  # CLIENT ID of the connection, for CLIENT UNBLOCK
        self.blocking = False  # a read is in flight
        self.stale = False  # streams joined since it was sent
        self.waking = False  # a wake-up is in flight

    def connected(self) -> bool:
        return bool(self.conn is not None and self.conn.is_connected)

    async def connect(self) -> Any:
        if self.conn is None:
            self.conn = self.reader.new_connection()
        if self.conn_id is None or not self.conn.is_connected:
            await self.conn.connect()
            self.conn_id = await self.identify()
            self.connected_at = time.monotonic()
        return self.conn

    async def identify(self) -> int:
        """Name the connection and return its CLIENT ID (one round trip). Where an ACL refuses
        either, the connection stays unnamed, or gets 0 (no wake-ups: short reads)."""
        if self.reader.name:
            await self.conn.send_command("CLIENT", "SETNAME", self.reader.name)
        await self.conn.send_command("CLIENT", "ID")
        if self.reader.name:
            with contextlib.suppress(ResponseError):
                await self.conn.read_response()
        try:
            return int(await self.conn.read_response())
        except ResponseError:
            self.reader.block_ms = min(self.reader.block_ms, SHORT_BLOCK_MS)
            return 0

    async def read(self) -> None:
        conn = await self.connect()
        streams = list(self.waiters)
        if not streams:  # all gone while connecting
            return
        block = self.reader.block_ms
        self.stale, self.blocking = False, True
        try:
            args = [*streams, *(self.last[stream] for stream in streams)]
            await conn.send_command("XREAD", "COUNT", COUNT, "BLOCK", block, "STREAMS", *args)
            response = await conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            await self.lost()  # cancelled or broken mid-read: the connection is out of sync
            raise
        finally:
            self.blocking = False
        self.deliver(response)

    def joined(self) -> None:
        self.stale = True
        if self.blocking and not self.waking:
            self.waking = True
            self.reader.spawn(self.wake())

    async def wake(self) -> None:
        """CLIENT UNBLOCK the blocked read so the next one includes the new streams. It
        answers 0 while the read has not reached the server yet: try again shortly."""
        try:
            while self.blocking and self.stale and self.conn_id:
                if await self.reader.redis.client_unblock(self.conn_id):
                    return
                await anyio.sleep(0.002)
        except ResponseError:  # not allowed (ACL): short reads from now on
            self.reader.block_ms = min(self.reader.block_ms, SHORT_BLOCK_MS)
        except (*TRANSIENT, RedisError):
            pass  # the read ends at its BLOCK timeout; the next one includes the new streams
        finally:
            self.waking = False

    async def lost(self) -> None:
        self.conn_id = None
        if self.conn is not None:
            await self.conn.disconnect(nowait=True)


class PollingLane(Lane):
    """Redis Cluster: non-blocking XREADs of every stream, pipelined, in rounds."""

    async def read(self) -> None:
        streams = list(self.waiters)
        resolved = 0
        for start in range(0, len(streams), POLL_CHUNK):
            chunk = streams[start : start + POLL_CHUNK]
            async with self.reader.redis.pipeline(transaction=False) as pipe:
                for stream in chunk:
                    pipe.xread({stream: self.last[stream]}, count=COUNT)
                results = await pipe.execute(raise_on_error=False)
            resolved += self.collect(chunk, results)
        if not resolved:
            await anyio.sleep(POLL_INTERVAL)

    def collect(self, streams: list[str], results: list[Any]) -> int:
        resolved = 0
        for stream, result in zip(streams, results, strict=True):
            if isinstance(result, ResponseError) and str(result).startswith("WRONGTYPE"):
                self.fail([stream], RequestError(f"reply key {stream} is not a stream"))
            elif isinstance(result, Exception):
                raise result
            elif stream in self.waiters:
                resolved += self.deliver(result)
        return resolved


def _stream_items(response: Any) -> Iterable[tuple[Any, Any]]:
    """(stream, entries) pairs of an XREAD reply (RESP2 list or RESP3 map; None: nothing)."""
    if not response:
        return ()
    if isinstance(response, dict):
        return response.items()
    return ((item[0], item[1]) for item in response)


def _field_dict(fields: Any) -> dict[bytes, bytes]:
    """An entry's fields as a dict (a flat [field, value, ...] list on the wire)."""
    if isinstance(fields, dict):
        return fields
    if fields is None:
        return {}
    items = iter(fields)
    return dict(zip(items, items, strict=False))
