"""What the runtime asks of a transport: the protocols of :class:`Transport` and its pieces.

A transport owns the connection to the message server and hands out small typed objects,
one per concern, so no module outside ``agent_runtime/transport/`` issues a server command:

* :class:`State` -- the agents' per-request state (``runtime.state``): get/put with a TTL,
  an optimistic read-modify-write (:meth:`State.transact`) and the few hash operations the
  approval records need.
* :class:`ServerTime` -- the server's clock (``TIME``), read by ``policies/clock.RedisClock``.
* :class:`Heartbeats` -- a worker's liveness record (set with TTL, delete, read).
* :class:`LLMStore` -- the LLM response cache and the per-request cost ledger.
* :class:`Deadlines` -- the deadline sweep's set, lock, answers and reads.
* :class:`Publisher` -- a client's request: XADD, trace record, deadline entry.
* :class:`BreakerStore` -- the circuit breakers' shared state (Lua scripts, server clock).
* :class:`Schedule` -- messages an agent type scheduled for itself (claim, settle).
* :class:`RateLimitStore` -- the fleet rate limits (Lua scripts, server clock).

The Redis implementation is :class:`agent_runtime.transport.redis.RedisTransport`; an
in-memory one implements the same protocols for in-process tests.

Values are **bytes**: the state API does not pick a serialisation for its callers (the router
stores pydantic JSON, the approval records plain JSON). ``str`` is accepted on writes and
stored as UTF-8. A TTL is whole seconds and always required on writes: per-request state
that outlives its request is a leak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent_runtime.errors import TransportError

if TYPE_CHECKING:
    from agent_runtime.transport.commit import Publication
    from agent_runtime.transport.deadlines import Answer
    from agent_runtime.transport.ratelimit import Grant

R = TypeVar("R")
Value = bytes | str
#: ``transact``'s function: old value (None: absent) -> (new value or None to write
#: nothing, result returned to the caller).
Transition = Callable[[bytes | None], tuple[Value | None, R]]

#: Attempts of one optimistic transaction before :class:`StateConflict`.
TRANSACT_ATTEMPTS = 64


class StateConflict(TransportError):
    """Every attempt of a ``transact`` lost the race to a concurrent writer. Transient: the
    delivery is retried later."""

    transient = True


class State(Protocol):
    """Per-request state of agents (keys from ``runtime.keys.request_state``)."""

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` (None: absent or expired)."""
        ...

    async def put(self, key: str, value: Value, ttl: int) -> None:
        """Store ``value`` at ``key`` for ``ttl`` seconds."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def transact(
        self, key: str, fn: Transition[R], *, ttl: int, attempts: int = TRANSACT_ATTEMPTS
    ) -> R:
        """Read ``key``, compute ``fn(old)`` and write its new value (with ``ttl``) only if
        no other writer changed ``key`` meanwhile; else run ``fn`` again on the fresh value
        (at most ``attempts`` runs, then :class:`StateConflict`). ``fn`` must be pure: it can
        run more than once."""
        ...

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at ``key`` (empty: absent)."""
        ...

    async def hash_put(self, key: str, fields: Mapping[str, Value], ttl: int) -> None:
        """Set ``fields`` of the hash at ``key`` and its TTL, atomically."""
        ...

    async def hash_delete(self, key: str, *fields: str) -> None: ...


class ServerTime(Protocol):
    """The clock every process agrees on."""

    async def now(self) -> float:
        """Server epoch seconds."""
        ...


class Heartbeats(Protocol):
    """Liveness records of worker processes (JSON text, with a TTL)."""

    async def beat(self, key: str, record: str, ttl: int) -> None: ...

    async def forget(self, key: str) -> None: ...

    async def read(self, keys: list[str]) -> list[bytes | None]:
        """Each key's record (None: absent or expired), in one round trip."""
        ...


class Transport(Protocol):
    """A connection to the message server and the typed pieces built on it."""

    @property
    def state(self) -> State: ...

    @property
    def clock(self) -> ServerTime: ...

    @property
    def heartbeats(self) -> Heartbeats: ...

    @property
    def llm_store(self) -> LLMStore: ...

    @property
    def deadlines(self) -> Deadlines: ...

    @property
    def publisher(self) -> Publisher: ...

    @property
    def breakers(self) -> BreakerStore: ...

    @property
    def schedule(self) -> Schedule: ...

    @property
    def rate_limits(self) -> RateLimitStore: ...

    async def aclose(self) -> None: ...


class LLMStore(Protocol):
    """The LLM response cache and the per-request cost ledger (a hash per request)."""

    async def cache_get(self, key: str) -> bytes | None:
        """The cached entry (raises ``TransportError`` when the store is unreachable)."""
        ...

    async def cache_put(self, key: str, entry: str, ttl: int) -> None: ...

    async def book(self, key: str, marker: str, model: str, usage: list[str | int]) -> bool: ...

    async def ledger(self, key: str) -> dict[str, str]: ...

    async def ledger_field(self, key: str, name: str) -> str | None: ...


class Deadlines(Protocol):
    """The fleet's deadline set and what the deadline sweep reads and writes
    (agent_runtime/transport/deadlines.py documents each command)."""

    async def due(self, now_ms: int, limit: int) -> list[bytes]: ...

    async def lock(self, token: str, ms: int) -> bool: ...

    async def unlock(self, token: str) -> None: ...

    async def settle(self, members: list[bytes]) -> None: ...

    async def answer(self, answers: list[Answer]) -> list[Any]: ...

    async def traces(self, cids: list[str], window: int) -> list[Any]: ...

    async def heartbeats(self, keys: list[str]) -> list[Any]: ...

    async def consumers(self, stream: str, group: str) -> list[tuple[int, str]]: ...


class Publisher(Protocol):
    """Queues a client's requests (agent_runtime/transport/commit.py)."""

    async def publish(self, request: Publication, *, label: str) -> BaseException | None: ...

    async def publish_many(
        self, requests: Sequence[Publication]
    ) -> tuple[list[BaseException | None], BaseException | None]: ...


class BreakerStore(Protocol):
    """The shared state of circuit breakers (agent_runtime/transport/breaker_scripts.py)."""

    async def acquire(
        self, key: str, token: str, reset_ms: int, probe_ms: int
    ) -> tuple[str, str, int, int]: ...

    async def record(
        self, key: str, token: str, outcome: str, fail_max: int, reset_ms: int
    ) -> str: ...

    async def release(self, key: str, token: str) -> None: ...

    async def read(self, key: str) -> tuple[dict[str, str], int]: ...


class Schedule(Protocol):
    """Messages agent types scheduled for themselves, by due time on the server's clock
    (agent_runtime/transport/schedule.py documents the claim/settle guarantees)."""

    async def add(self, agent: str, member: bytes, due_ms: int) -> None: ...

    async def remove(self, agent: str, member: bytes) -> None: ...

    async def claim(
        self, agent: str, now_ms: int, lease_until_ms: int, limit: int
    ) -> list[bytes]: ...

    async def settle(self, agent: str, member: bytes, lease_until_ms: int) -> bool: ...

    async def members(self, agent: str, limit: int) -> list[tuple[bytes, float]]: ...


class RateLimitStore(Protocol):
    """The fleet rate limits (agent_runtime/transport/ratelimit.py documents the scripts)."""

    async def acquire(
        self,
        keys: list[str],
        member: str,
        *,
        window_ms: int,
        lease_ms: int,
        costs: list[tuple[int, int]],
    ) -> Grant: ...

    async def settle(self, keys: list[str], member: str, costs: list[int | None]) -> None: ...

    async def usage(self, keys: list[str], window_ms: int) -> tuple[int, list[tuple[int, int]]]: ...

    async def count(self, key: str, fields: dict[str, int]) -> None: ...

    async def stats(self, key: str) -> dict[str, int]: ...
