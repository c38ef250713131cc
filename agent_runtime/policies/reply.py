"""The timeout report a requester gets instead of waiting forever.

When a worker dead-letters a message with reason ``expired`` and the message carries
``reply_to``, it also writes a terminal ``request.failed`` reply (``status="timeout"``) to that
reply stream, in the same commit pipeline as the dead letter and the XACK. The reply id is
deterministic (uuid5 of the expired message id and a reserved output index), so a redelivered
expired message writes the same id again and readers can drop the copy.
"""

from __future__ import annotations

from agent_runtime.agent import REPLY_TTL
from agent_runtime.codec import Codec
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage, utcnow

#: Output index reserved for the timeout reply (handlers' outputs count up from 0).
TIMEOUT_REPLY_INDEX = -1

Output = tuple[str, dict[bytes, bytes], int | None]


def timeout_reply(message: AgentMessage, agent: str, codec: Codec, reason: str) -> Output | None:
    """``(reply stream, entry fields, ttl)`` of the timeout reply, or None without reply_to."""
    if message.reply_to is None:
        return None
    payload = RequestFailed(
        status="timeout", reason=reason[:2_000], agent=agent, stage=message.message_type
    )
    reply = message.derive(
        index=TIMEOUT_REPLY_INDEX,
        from_agent=agent,
        to_agent="client",
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        payload=payload.model_dump(mode="json"),
        now=utcnow(),
    )
    return (message.reply_to, codec.encode(reply), REPLY_TTL)
