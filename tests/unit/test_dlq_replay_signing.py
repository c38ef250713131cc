"""``dlq replay`` with signing on: a letter whose original still verifies goes back unchanged,
one signed with a retired key (or redacted) is signed anew for its inbox, and a letter that
failed its signature check is never replayed -- re-signing it would launder a forgery."""

from __future__ import annotations

import uuid

import fakeredis
import pytest

from agent_runtime.codec import FIELD_KEY_ID, FIELD_SIGNATURE, Codec
from agent_runtime.errors import AgentRuntimeError
from agent_runtime.observability.deadletters import Letter, replay
from agent_runtime.signing import Keyring, key_id
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.original import describe_original
from protocols.base import SchemaRegistry
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow

KEYS = Keys("ar")
INBOX = KEYS.inbox("echo")
CURRENT, RETIRED = b"current-secret-0123456789", b"retired-secret-0123456789"
CODEC = Codec(SchemaRegistry([UserRequest]), keyring=Keyring.of(CURRENT), keys=KEYS)


def letter(fields: dict[bytes, bytes], reason: str) -> Letter:
    kept = describe_original(fields, whole=True)
    meta = {b"stream": INBOX.encode(), b"reason": reason.encode()}
    return Letter(KEYS.dlq("echo"), "1-0", "echo", {**meta, **kept})


def entry(codec: Codec) -> dict[bytes, bytes]:
    message = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload={"text": "hi"},
        timestamp=utcnow(),
    )
    return codec.encode(message, INBOX)


async def replayed(dead: Letter) -> dict[bytes, bytes]:
    redis = fakeredis.FakeAsyncRedis()
    await replay(DeadLetterStore(redis, KEYS), dead, CODEC)
    [(_id, fields)] = await redis.xrange(INBOX)
    await redis.aclose()
    return dict(fields)


@pytest.mark.anyio
async def test_a_verified_original_goes_back_unchanged() -> None:
    original = entry(CODEC)
    assert await replayed(letter(original, "max_deliveries")) == original


@pytest.mark.anyio
async def test_an_original_signed_with_a_retired_key_is_signed_anew() -> None:
    old = entry(Codec(SchemaRegistry([UserRequest]), signing_key=RETIRED))
    fields = await replayed(letter(old, "permanent_error"))
    assert fields[FIELD_KEY_ID] == key_id(CURRENT).encode()
    assert fields[FIELD_SIGNATURE] != old[FIELD_SIGNATURE]
    assert CODEC.decode(fields, INBOX).message.to_agent == "echo"


@pytest.mark.anyio
async def test_a_bad_signature_letter_is_never_replayed() -> None:
    forged = entry(Codec(SchemaRegistry([UserRequest]), signing_key=b"attacker-0123456789"))
    with pytest.raises(AgentRuntimeError, match="launder"):
        await replayed(letter(forged, "bad_signature"))
