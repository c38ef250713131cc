"""Response cache in Redis: the same question to the same model is paid once.

The key is ``keys.llm_cache(sha256(provider, model, system, prompt, schema JSON, max_tokens))``
with a TTL. A hit returns the stored answer, validated again with the schema, and a usage
with ``cached=True``, zero tokens and zero cost -- so a message reclaimed after its worker
died (and handled again) neither calls the provider nor pays twice. The first answer
stored wins (``SET NX``). A Redis failure in the cache degrades to an uncached call and logs
``llm_cache_failed``; it never fails the call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from agent_runtime.errors import TransportError
from agent_runtime.llm.base import Completion, LLMProvider, Usage
from agent_runtime.transport.base import LLMStore
from agent_runtime.transport.keys import Keys

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_TTL = 24 * 3600
MAX_ENTRY_BYTES = 1 << 20


def cache_digest(
    *, provider: str, model: str, system: str, prompt: str, schema: type[BaseModel], max_tokens: int
) -> str:
    """sha256 over everything that determines the answer."""
    material = json.dumps(
        [
            provider,
            model,
            system,
            prompt,
            json.dumps(schema.model_json_schema(), sort_keys=True),
            max_tokens,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class CachedProvider:
    """Wraps any provider with the response cache (commands: ``transport.llm_store``)."""

    def __init__(
        self,
        inner: LLMProvider,
        store: LLMStore,
        keys: Keys,
        ttl: int = DEFAULT_TTL,
        *,
        log: Any = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.model: str = getattr(inner, "model", "")
        self._store = store
        self._keys = keys
        self._ttl = ttl
        self._log = log or structlog.get_logger("agent_runtime.llm")

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r}, ttl={self._ttl})"

    async def complete(
        self, *, system: str, prompt: str, schema: type[ModelT], max_tokens: int = 1024
    ) -> Completion[ModelT]:
        key = self._keys.llm_cache(
            cache_digest(
                provider=self.name,
                model=self.model,
                system=system,
                prompt=prompt,
                schema=schema,
                max_tokens=max_tokens,
            )
        )
        hit = await self._get(key, schema)
        if hit is not None:
            return hit
        completion = await self.inner.complete(
            system=system, prompt=prompt, schema=schema, max_tokens=max_tokens
        )
        await self._put(key, completion)
        return completion

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def _get(self, key: str, schema: type[ModelT]) -> Completion[ModelT] | None:
        try:
            raw = await self._store.cache_get(key)
        except TransportError as exc:
            self._log.warning("llm_cache_failed", op="get", error=str(exc))
            return None
        if raw is None or len(raw) > MAX_ENTRY_BYTES:
            return None
        try:
            entry = json.loads(raw)
            value = schema.model_validate(entry["value"])
        except (ValueError, KeyError, TypeError, ValidationError):
            self._log.warning("llm_cache_entry_ignored", key=key)
            return None
        self._log.debug("llm_cache_hit", provider=self.name, model=entry.get("model"))
        usage = Usage(provider=self.name, model=str(entry.get("model") or self.model), cached=True)
        return Completion(value=value, usage=usage)

    async def _put(self, key: str, completion: Completion[Any]) -> None:
        entry = json.dumps(
            {
                "value": completion.value.model_dump(mode="json"),
                "model": completion.usage.model,
                "input_tokens": completion.usage.input_tokens,
                "output_tokens": completion.usage.output_tokens,
            }
        )
        if len(entry) > MAX_ENTRY_BYTES or self._ttl <= 0:
            return
        try:
            await self._store.cache_put(key, entry, self._ttl)
        except TransportError as exc:
            self._log.warning("llm_cache_failed", op="set", error=str(exc))
