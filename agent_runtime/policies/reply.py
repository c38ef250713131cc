"""The failure reply a requester gets instead of waiting forever.

When a worker dead-letters a message whose envelope it could read (any reason: rejected,
expired, a permanent error, the delivery cap, an invalid payload) and the message carries
``reply_to``, it also writes one terminal ``request.failed`` reply to that reply stream, in the
same commit as the dead letter and the XACK. The write is guarded by the request's outcome key
(``Keys.outcome``): a request gets exactly one terminal reply, whoever writes first. The reply
id is deterministic (uuid5 of the dead message id and a reserved output index), so a replayed
commit or a redelivered message writes the same id again and readers can drop the copy.
"""

from __future__ import annotations

from agent_runtime.agent import REPLY_TTL
from agent_runtime.codec import Codec
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import Write
from agent_runtime.worker.fate import status_of
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage, utcnow

#: Output index reserved for the failure reply (handlers' outputs count up from 0).
FAILURE_REPLY_INDEX = -1


def failure_reply(
    message: AgentMessage,
    agent: str,
    codec: Codec,
    keys: Keys,
    *,
    reason: str,
    error: str,
    dead_letter_id: str = "",
) -> Write | None:
    """The guarded ``request.failed`` write for a dead-lettered ``message``, or None without
    ``reply_to``. ``reason`` is the dead-letter reason code, ``error`` its human text."""
    if message.reply_to is None:
        return None
    payload = RequestFailed(
        status=status_of(reason),
        reason=error[:2_000],
        agent=agent[:64],
        stage=message.message_type,
        code=reason[:64],
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
    return Write(message.reply_to, codec.encode(reply), REPLY_TTL, None, guard)
