"""Dead-letter tools: list, show, replay and purge entries of the ``P:dlq:AGENT`` streams.

A dead-letter entry holds ``reason``, ``error``, ``stream`` (the inbox it came from),
``entry_id``, ``delivery_count``, ``consumer``, ``failed_at_ms``, the envelope's
``correlation_id``/``message_id``/``message_type`` when it could be decoded, and a bounded
account of the original entry (agent_runtime/transport/original.py): ``orig_fields``,
``orig_size``, fields kept whole prefixed ``orig.`` (a decoded envelope always), prefixes of
longer ones as ``orig_head.NAME`` and the envelope's ``orig_sha256``. Replay XADDs the fields
kept whole to the original inbox as a new entry (a new delivery, count 1; same message id and
correlation) and deletes the letter; a letter that kept only a prefix cannot be replayed.
Dead-lettered messages have no done marker, so the worker handles the replayed copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.codec import FIELD_KEY_ID, FIELD_MESSAGE, FIELD_SIGNATURE, Codec
from agent_runtime.errors import AgentRuntimeError
from agent_runtime.limits import too_deep
from agent_runtime.observability import inspect
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.original import HEAD_PREFIX
from agent_runtime.transport.streams import original_fields


@dataclass
class Letter:
    """One dead-letter entry."""

    dlq: str
    id: str
    agent: str
    fields: dict[bytes, bytes] = field(repr=False)

    def get(self, name: str) -> str:
        return inspect.text(self.fields.get(name.encode()))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dlq": self.dlq,
            "agent": self.agent,
            "reason": self.get("reason"),
            "message_type": self.get("message_type") or None,
            "correlation_id": self.get("correlation_id") or None,
            "message_id": self.get("message_id") or None,
            "dead_letter_id": self.get("dead_letter_id") or None,
            "stream": self.get("stream"),
            "delivery_count": int(self.get("delivery_count") or 0),
            "age_s": round(inspect.entry_age(self.id), 3),
            "error": self.get("error"),
            "redacted": self.get("redacted") == "1",
        }

    def detail(self) -> dict[str, Any]:
        """Everything, the original envelope parsed when it is JSON."""
        out = self.summary()
        out["consumer"] = self.get("consumer")
        out["entry_id"] = self.get("entry_id")
        original = original_fields(self.fields)
        out["original"] = {
            k.decode("utf-8", "replace"): _maybe_json(v) for k, v in original.items()
        }
        heads = {
            k[len(HEAD_PREFIX) :].decode("utf-8", "replace"): v.decode("utf-8", "replace")
            for k, v in self.fields.items()
            if k.startswith(HEAD_PREFIX)
        }
        if heads:  # fields too long to keep: their first bytes only
            out["original_heads"] = heads
        out["original_size"] = int(self.get("orig_size") or 0) or None
        out["original_fields"] = int(self.get("orig_fields") or 0) or None
        out["original_sha256"] = self.get("orig_sha256") or None
        return out


def _maybe_json(value: bytes) -> Any:
    """``value`` parsed when it is JSON within the depth cap, else as text."""
    try:
        return value.decode("utf-8", "replace") if too_deep(value) else json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return value.decode("utf-8", "replace")


async def find_letters(
    store: DeadLetterStore,
    *,
    agent: str | None = None,
    reason: str | None = None,
    ids: list[str] | None = None,
) -> list[Letter]:
    """Dead letters matching every filter given (agent type, reason, ids: the entry ids in
    the dead-letter stream, or the ``dead_letter_id`` a ``request.failed`` reply names)."""
    keys = store.keys
    dlqs = [keys.dlq(agent)] if agent else await store.streams()
    wanted = set(ids or [])
    out = []
    for dlq in dlqs:
        for entry_id, fields in await store.entries(dlq):
            letter = Letter(dlq, entry_id, inspect.dlq_agent(keys, dlq), fields)
            if reason and letter.get("reason") != reason:
                continue
            if wanted and entry_id not in wanted and letter.get("dead_letter_id") not in wanted:
                continue
            out.append(letter)
    return out


async def replay(store: DeadLetterStore, letter: Letter, codec: Codec | None = None) -> str:
    """Re-publish the original entry to its inbox (new entry id) and delete the letter.
    With a signing ``codec``, an original whose signature does not verify now (redacted, or
    signed with a key since retired) is signed anew for its inbox; a letter dead-lettered
    ``bad_signature`` is never replayed (re-signing would launder a forged entry). The
    request is reopened: its outcome guard is cleared, so the replayed message can end it
    again (its requester, who got ``request.failed``, then sees a second terminal reply)."""
    keys = store.keys
    stream = letter.get("stream")
    if not stream.startswith(keys.inbox("")):
        raise AgentRuntimeError(
            f"dead letter {letter.id}: original stream {stream!r} is not an "
            f"inbox under prefix {keys.prefix!r}; not replaying"
        )
    fields = original_fields(letter.fields)
    if FIELD_MESSAGE not in fields:
        prefix_only = HEAD_PREFIX + FIELD_MESSAGE in letter.fields
        kept = " (only a prefix of it was kept)" if prefix_only else ""
        raise AgentRuntimeError(f"dead letter {letter.id} has no original envelope to replay{kept}")
    if codec is not None and codec.keyring is not None:
        if letter.get("reason") == "bad_signature":
            raise AgentRuntimeError(
                f"dead letter {letter.id} failed signature verification (forged, tampered or "
                "copied from another stream); re-signing it would launder it: not replaying"
            )
        ring, signature = codec.keyring, fields.get(FIELD_SIGNATURE, b"")
        kid = fields.get(FIELD_KEY_ID)
        if not signature or ring.verify(stream, fields[FIELD_MESSAGE], kid, signature):
            fields = codec.sign_fields(fields, stream)
    cid = letter.get("correlation_id")
    return await store.republish(letter.dlq, letter.id, stream, fields, reopen=cid or None)


async def purge(store: DeadLetterStore, letters: list[Letter]) -> int:
    """Delete ``letters``; returns how many were deleted."""
    by_stream: dict[str, list[str]] = {}
    for letter in letters:
        by_stream.setdefault(letter.dlq, []).append(letter.id)
    return sum([await store.delete(dlq, ids) for dlq, ids in by_stream.items()])
