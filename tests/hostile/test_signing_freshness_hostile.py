"""The new decode paths of issue 14 on hostile input: the key id and signature fields of a
signed entry (any bytes, any length, any key id) and the envelope's timestamp (any instant
pydantic accepts, any offset). A signed codec raises nothing but ``bad_signature`` for an entry
whose signature fields are not the right MAC, whatever they hold; the freshness check places
every accepted timestamp on the server's clock and decides ``handle``, ``stale`` or
``clock_skew`` -- never an exception."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.codec import FIELD_KEY_ID, FIELD_MESSAGE, FIELD_SIGNATURE, Codec
from agent_runtime.errors import DecodeError
from agent_runtime.signing import Keyring
from agent_runtime.worker.fate import HANDLE, Rules, before_handling, epoch_seconds, fate_of
from protocols.base import SchemaRegistry
from protocols.core import UserRequest
from protocols.envelope import AgentMessage

STREAM = "ar:inbox:echo"
SECRET, OLD = b"current-signing-secret", b"older-verify-only-secret"
CODEC = Codec(SchemaRegistry([UserRequest]), keyring=Keyring.of(SECRET, OLD))
RULES = Rules("echo", 5, max_age=3600.0, clock_skew=60.0)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()


def envelope(**overrides: object) -> AgentMessage:
    values: dict[str, object] = {
        "message_id": uuid.uuid4(),
        "correlation_id": uuid.uuid4(),
        "from_agent": "client",
        "to_agent": "echo",
        "message_type": "user.request",
        "schema_version": 1,
        "payload": {"text": "hi"},
        "timestamp": datetime.now(UTC),
    }
    values.update(overrides)
    return AgentMessage(**values)  # type: ignore[arg-type]


GOOD = CODEC.encode(envelope(), STREAM)
some_bytes = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([GOOD[FIELD_KEY_ID], GOOD[FIELD_SIGNATURE], b"", b"\xff" * 8]),
    st.integers(0, 1 << 16).map(lambda n: b"k" * n),  # long values cost one compare
)


@settings(max_examples=300)
@given(
    kid=st.none() | some_bytes,
    mac=st.none() | some_bytes,
    stream=st.sampled_from([STREAM, "ar:inbox:sink", "", "ar:reply:{x}", "é" * 300]),
)
def test_any_key_id_and_signature_bytes_are_bad_signature_unless_right(
    kid: bytes | None, mac: bytes | None, stream: str
) -> None:
    fields = {FIELD_MESSAGE: GOOD[FIELD_MESSAGE]}
    if kid is not None:
        fields[FIELD_KEY_ID] = kid
    if mac is not None:
        fields[FIELD_SIGNATURE] = mac
    right = (
        stream == STREAM
        and mac == GOOD[FIELD_SIGNATURE]
        and kid in (None, GOOD[FIELD_KEY_ID])  # no key id: every key of the ring is tried
    )
    if right:
        assert CODEC.decode(fields, stream).payload == UserRequest(text="hi")
        return
    with pytest.raises(DecodeError) as info:
        CODEC.decode(fields, stream)
    assert info.value.reason == "bad_signature"
    assert len(str(info.value)) < 300  # the text quotes at most a short prefix of the id


def test_a_verify_only_key_verifies_and_an_unknown_id_says_so() -> None:
    old = Codec(SchemaRegistry([UserRequest]), keyring=Keyring.of(OLD))
    assert CODEC.decode(old.encode(envelope(), STREAM), STREAM).message.to_agent == "echo"
    with pytest.raises(DecodeError, match="unknown here"):
        CODEC.decode({**GOOD, FIELD_KEY_ID: b"deadbeef"}, STREAM)


offsets = st.integers(-23 * 60 + 1, 23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@settings(max_examples=500)
@given(stamp=instants)
def test_any_timestamp_is_fresh_stale_or_skewed_never_an_error(stamp: datetime) -> None:
    """The timestamp the codec accepts goes through the worker's freshness check (age on the
    server's clock, loop.py) to exactly one verdict."""
    fields = CODEC.encode(envelope(timestamp=stamp), STREAM)
    message = CODEC.decode(fields, STREAM).message
    age = NOW - message.timestamp.timestamp()
    assert NOW - epoch_seconds(message.timestamp) == age  # the worker's float, exactly
    fate = fate_of(None, 1, RULES, age=age, to_agent=message.to_agent)
    assert before_handling(1, RULES, None, 0, message.to_agent, age) == fate
    if age > RULES.max_age:
        assert (fate.action, fate.reason) == ("dead", "stale")
    elif -age > RULES.clock_skew:
        assert (fate.action, fate.reason) == ("dead", "clock_skew")
    else:
        assert fate is HANDLE


@given(text=st.text(max_size=40))
def test_a_mangled_timestamp_is_refused_or_an_aware_instant(text: str) -> None:
    """Whatever text stands in the timestamp: the decode either refuses it (``invalid``,
    ``undecodable``) or yields an aware instant the freshness check can place -- a naive or
    unparsable time never reaches the clock check."""
    data = envelope().model_dump_json().encode()
    start = data.index(b'"timestamp":"') + len(b'"timestamp":"')
    end = data.index(b'"', start)
    mangled = data[:start] + text.replace('"', "").replace("\\", "").encode() + data[end:]
    fields = CODEC.sign_fields({FIELD_MESSAGE: mangled}, STREAM)
    try:
        message = CODEC.decode(fields, STREAM).message
    except DecodeError as exc:
        assert exc.reason in ("invalid", "undecodable")
        return
    assert message.timestamp.utcoffset() is not None
    assert epoch_seconds(message.timestamp) == message.timestamp.timestamp()
    fate_of(None, 1, RULES, age=NOW - message.timestamp.timestamp())
