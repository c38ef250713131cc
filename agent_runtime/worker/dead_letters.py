"""Turning one undeliverable entry into its dead letter: the bounded, redacted dead-letter
entry, the trace record and -- when the envelope was read -- the requester's guarded
``request.failed`` reply, all written by the worker's next commit (see docs/architecture.md,
"Failure and outcomes"). Building a dead letter never raises."""

from __future__ import annotations

import time
import uuid
from typing import Any

from agent_runtime.codec import Codec
from agent_runtime.limits import MAX_ERROR_TEXT
from agent_runtime.observability.redaction import Redactor, redact_dead_letter
from agent_runtime.policies.reply import failure_reply
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.original import describe_original
from agent_runtime.transport.streams import DeadLetter, Entry, Write
from agent_runtime.worker.delivery import Tracer
from protocols.envelope import AgentMessage

#: Namespace of dead-letter ids (uuid5 of the dead message's id): ``request.failed`` names it.
DEAD_LETTER_IDS = uuid.UUID("0b8e5f6c-7d2a-4c1e-9f3b-5a6d7e8f9a0b")

Trace = tuple[str, bytes]  # (correlation id, trace record)


class DeadLetters:
    """Makes the dead letters of one agent type's worker."""

    def __init__(
        self,
        agent: str,
        keys: Keys,
        codec: Codec,
        redactor: Redactor,
        tracer: Tracer | None,
        log: Any,
    ) -> None:
        self.agent = agent
        self.keys = keys
        self.codec = codec
        self.redactor = redactor
        self.tracer = tracer
        self.log = log

    def make(
        self, entry: Entry, reason: str, error: str, message: AgentMessage | None = None
    ) -> tuple[DeadLetter, Trace | None]:
        """The dead letter of ``entry`` (``reason`` a code, ``error`` the text) and its trace
        record (None when the envelope was not read or traces are off)."""
        error = error[:MAX_ERROR_TEXT]  # bounded before it is logged and redacted
        extra: dict[str, str] = {}
        reply, trace = None, None
        if message is not None:
            letter_id = str(uuid.uuid5(DEAD_LETTER_IDS, message.id_text))
            extra = {
                "correlation_id": str(message.correlation_id),
                "message_id": message.id_text,
                "message_type": message.message_type,
                "dead_letter_id": letter_id,
            }
            if self.tracer is not None:
                record = self.tracer.record(message, entry, "dead_lettered", time.time(), reason)
                trace = (extra["correlation_id"], record)
            reply = self._failure_reply(message, reason, error, letter_id)
        self.log.warning(
            "message_dead_lettered",
            reason=reason,
            error=error,
            entry_id=entry.entry_id.decode(),
            stream=entry.stream,
            **extra,
        )
        original = describe_original(entry.fields, whole=message is not None)  # bounded
        letter = DeadLetter(
            entry, self.keys.dlq(self.agent), reason, error, extra, original=original
        )
        letter = redact_dead_letter(letter, self.redactor)
        letter.reply = reply
        return letter, trace

    def _failure_reply(
        self, message: AgentMessage, reason: str, error: str, letter_id: str
    ) -> Write | None:
        """The requester's ``request.failed``; None when it cannot be built (an envelope at a
        model limit, e.g. ``hops`` 1000: its reply would be hop 1001)."""
        try:
            return failure_reply(
                message,
                self.agent,
                self.codec,
                self.keys,
                reason=reason,
                error=self.redactor.text(error),
                dead_letter_id=letter_id,
            )
        except Exception as exc:
            self.log.error("failure_reply_failed", reason=reason, error=repr(exc)[:500])
            return None
