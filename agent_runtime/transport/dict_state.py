"""A dict-backed :class:`~agent_runtime.transport.base.State` for in-process tests
(``agent_runtime.testing.AgentHarness``): same semantics as the Redis one, TTLs on the local
monotonic clock. A ``transact`` runs ``fn`` again if the key changed while it ran (a write
from another thread: :meth:`DictState.write_behind`), as the Redis one does."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from agent_runtime.transport.base import TRANSACT_ATTEMPTS, R, StateConflict, Transition, Value


def _bytes(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class DictState:
    """Values and hashes in dicts, each with an expiry instant."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._values: dict[str, bytes] = {}
        self._hashes: dict[str, dict[str, bytes]] = {}
        self._expiry: dict[str, float] = {}
        self._versions: dict[str, int] = {}  # writes per key: transact's conflict check

    def _live(self, key: str) -> bool:
        at = self._expiry.get(key)
        if at is not None and at <= self._now():
            self._values.pop(key, None)
            self._hashes.pop(key, None)
            self._expiry.pop(key, None)
        return key in self._values or key in self._hashes

    async def get(self, key: str) -> bytes | None:
        return self._values.get(key) if self._live(key) else None

    async def put(self, key: str, value: Value, ttl: int) -> None:
        self.write_behind(key, value, ttl)

    def write_behind(self, key: str, value: Value, ttl: int) -> None:
        """A plain write (also what a concurrent writer in tests uses)."""
        self._versions[key] = self._versions.get(key, 0) + 1
        self._hashes.pop(key, None)
        self._values[key] = _bytes(value)
        self._expiry[key] = self._now() + ttl

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._versions[key] = self._versions.get(key, 0) + 1
            self._values.pop(key, None)
            self._hashes.pop(key, None)
            self._expiry.pop(key, None)

    async def transact(
        self, key: str, fn: Transition[R], *, ttl: int, attempts: int = TRANSACT_ATTEMPTS
    ) -> R:
        for _ in range(attempts):
            version = self._versions.get(key, 0)
            new, result = fn(await self.get(key))
            if self._versions.get(key, 0) != version:
                continue  # written meanwhile: run fn on the fresh value
            if new is not None:
                await self.put(key, new, ttl)
            return result
        raise StateConflict(f"{key}: {attempts} attempts lost to concurrent writers")

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        return dict(self._hashes.get(key, {})) if self._live(key) else {}

    async def hash_put(self, key: str, fields: Mapping[str, Value], ttl: int) -> None:
        self._versions[key] = self._versions.get(key, 0) + 1
        if not self._live(key):
            self._hashes[key] = {}
        self._hashes[key].update({k: _bytes(v) for k, v in fields.items()})
        self._expiry[key] = self._now() + ttl

    async def hash_delete(self, key: str, *fields: str) -> None:
        if self._live(key) and key in self._hashes:
            for name in fields:
                self._hashes[key].pop(name, None)
            if not self._hashes[key]:
                await self.delete(key)
