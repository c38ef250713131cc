"""A client's request publish (``Client.send``): the XADD to the entry agent's inbox, the
trace's ``published`` record and the deadline entry, pipelined in one round trip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_runtime.errors import TransportError
from agent_runtime.transport.connect import out_of_memory
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import TRACE_SCRIPT


@dataclass(frozen=True, slots=True)
class Publication:
    """One request to queue, and what goes with it."""

    stream: str
    fields: Mapping[bytes, bytes]
    #: The trace list, its TTL and the ``published`` record (None: the agent writes none).
    trace: tuple[str, int, bytes] | None = None
    #: Member and score (ms) in the deadline set (None: not swept).
    deadline: tuple[str, int] | None = None


class RedisPublisher:
    """:class:`~agent_runtime.transport.base.Publisher` on a redis-py client."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, request: Publication, *, label: str) -> BaseException | None:
        """Queue ``request``. Only a failed XADD raises (``label`` names the request in the
        error); a trace record or deadline entry that cannot be written is not the request's
        failure: the deadline entry's error is returned for the caller to log."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(request.stream, dict(request.fields))
            if request.trace is not None:
                key, ttl, record = request.trace
                pipe.eval(TRACE_SCRIPT, 1, key, ttl, record)
            if request.deadline is not None:
                member, score = request.deadline
                pipe.zadd(self._keys.deadlines(), {member: score}, gt=True)
            queued, *rest = await pipe.execute(raise_on_error=False)
        if out_of_memory(queued):  # maxmemory + noeviction: refused, not queued
            raise TransportError(
                f"{label} not published: the Redis server is out of memory (OOM: {queued}); "
                "free memory or raise maxmemory, then publish again"
            ) from queued
        if isinstance(queued, Exception):
            raise queued
        failed = rest[-1] if request.deadline is not None else None
        return failed if isinstance(failed, BaseException) else None
