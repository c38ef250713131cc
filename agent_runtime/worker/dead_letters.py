"""Turning one dead delivery into its dead letter: the bounded, redacted dead-letter entry
and -- when the envelope was read and names ``reply_to`` -- the requester's guarded
``request.failed`` reply, both written by the worker's next commit with the ack (see
docs/architecture.md, "Failure and outcomes"). The fate (reason code, text, status) comes
from agent_runtime/worker/fate.py. Building a dead letter never raises.

The failure reply is the requester's answer instead of waiting forever: one terminal reply
per request, guarded by the request's outcome key (``Keys.outcome``: whoever writes first).
Its id is deterministic (uuid5 of the dead message id and the reserved output index -1), so a
replayed commit or a redelivered message writes the same id again and readers drop the copy.
"""

from __future__ import annotations

import uuid
from typing import Any

from agent_runtime.agent import REPLY_TTL
from agent_runtime.codec import Codec
from agent_runtime.limits import MAX_ERROR_TEXT
from agent_runtime.observability.redaction import Redactor, redact_dead_letter
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.original import describe_original
from agent_runtime.transport.streams import DeadLetter, Entry, Write
from agent_runtime.worker.fate import Fate
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage, utcnow

#: Namespace of dead-letter ids (uuid5 of the dead message's id): ``request.failed`` names it.
DEAD_LETTER_IDS = uuid.UUID("0b8e5f6c-7d2a-4c1e-9f3b-5a6d7e8f9a0b")

#: Output index reserved for the failure reply (handlers' outputs count up from 0).
FAILURE_REPLY_INDEX = -1


class DeadLetters:
    """Makes the dead letters of one agent type's worker."""

    def __init__(self, agent: str, keys: Keys, codec: Codec, redactor: Redactor, log: Any) -> None:
        self.agent = agent
        self.keys = keys
        self.codec = codec
        self.redactor = redactor
        self.log = log

    def make(self, entry: Entry, fate: Fate, message: AgentMessage | None = None) -> DeadLetter:
        """The dead letter of ``entry`` for a ``dead`` fate, with the failure reply when the
        envelope (``message``) was read."""
        error = fate.error[:MAX_ERROR_TEXT]  # bounded before it is logged and redacted
        extra: dict[str, str] = {}
        reply = None
        if message is not None:
            letter_id = str(uuid.uuid5(DEAD_LETTER_IDS, message.id_text))
            extra = {
                "correlation_id": str(message.correlation_id),
                "message_id": message.id_text,
                "message_type": message.message_type,
                "dead_letter_id": letter_id,
            }
            reply = self._failure_reply(message, fate, error, letter_id)
        self.log.warning(
            "message_dead_lettered",
            reason=fate.reason,
            error=error,
            entry_id=entry.entry_id.decode(),
            stream=entry.stream,
            **extra,
        )
        original = describe_original(entry.fields, whole=message is not None)  # bounded
        letter = DeadLetter(
            entry, self.keys.dlq(self.agent), fate.reason, error, extra, original=original
        )
        redacted: DeadLetter = redact_dead_letter(letter, self.redactor)
        redacted.reply = reply
        return redacted

    def _failure_reply(
        self, message: AgentMessage, fate: Fate, error: str, letter_id: str
    ) -> Write | None:
        """The requester's ``request.failed``; None without ``reply_to`` or when it cannot be
        built (an envelope at a model limit, e.g. ``hops`` 1000: its reply would be hop 1001)."""
        try:
            return failure_reply(
                message,
                self.agent,
                self.codec,
                self.keys,
                fate,
                error=self.redactor.text(error),
                dead_letter_id=letter_id,
            )
        except Exception as exc:
            self.log.error("failure_reply_failed", reason=fate.reason, error=repr(exc)[:500])
            return None


def failure_reply(
    message: AgentMessage,
    agent: str,
    codec: Codec,
    keys: Keys,
    fate: Fate,
    *,
    error: str,
    dead_letter_id: str = "",
) -> Write | None:
    """The guarded ``request.failed`` write for ``message`` dead-lettered with ``fate``, or
    None without ``reply_to``. ``error`` is the (redacted) human text."""
    if message.reply_to is None:
        return None
    payload = RequestFailed(
        status=fate.status,
        reason=error[:2_000],
        agent=agent[:64],
        stage=message.message_type,
        code=fate.reason[:64],
        hop=message.hops,
        dead_letter_id=dead_letter_id,
    )
    reply = message.derive(
        index=FAILURE_REPLY_INDEX,
        from_agent=agent,
        to_agent="client",
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        payload=payload.model_dump(mode="json"),
        now=utcnow(),
    )
    guard = keys.outcome(message.correlation_text)
    return Write(message.reply_to, codec.encode(reply, message.reply_to), REPLY_TTL, None, guard)
