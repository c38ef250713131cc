"""Envelope, codec and schema registry: the typed contract on the wire."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_runtime.codec import Codec
from agent_runtime.errors import DecodeError
from protocols.base import Payload, SchemaRegistry
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, output_id

STREAM = "ar:inbox:test"  # any stream: these codecs are unsigned


class GreetingV1(Payload):
    message_type = "test.greeting"
    schema_version = 1
    name: str


class GreetingV2(Payload):
    message_type = "test.greeting"
    schema_version = 2
    previous: ClassVar[type[Payload] | None] = GreetingV1
    name: str
    language: str = "en"


class GreetingV3(Payload):
    message_type = "test.greeting"
    schema_version = 3
    previous: ClassVar[type[Payload] | None] = GreetingV2
    name: str
    language: str


def message(body: Payload, **overrides: object) -> AgentMessage:
    fields: dict[str, object] = dict(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="echo",
        message_type=body.message_type,
        schema_version=body.schema_version,
        payload=body.model_dump(mode="json"),
        timestamp=datetime.now(UTC),
    )
    fields.update(overrides)
    return AgentMessage(**fields)  # type: ignore[arg-type]


def test_envelope_is_frozen_and_rejects_unknown_fields() -> None:
    msg = message(UserRequest(text="hi"))
    with pytest.raises(ValidationError):
        msg.hops = 3  # type: ignore[misc]
    data = json.loads(msg.model_dump_json())
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        AgentMessage.model_validate_json(json.dumps(data))


def test_envelope_requires_timezone_and_dotted_type() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        message(UserRequest(text="hi"), timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="message_type"):
        message(UserRequest(text="hi"), message_type="nodots")


def test_derived_outputs_have_deterministic_ids_and_inherit_context() -> None:
    parent = message(
        UserRequest(text="hi"),
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        reply_to="ar:reply:{x}",
        budget_usd=1.5,
    )
    kwargs = dict(
        index=0,
        from_agent="echo",
        to_agent="sink",
        message_type="test.greeting",
        schema_version=1,
        payload={"name": "a"},
        now=datetime.now(UTC),
    )
    first, again = parent.derive(**kwargs), parent.derive(**kwargs)  # type: ignore[arg-type]
    assert first.message_id == again.message_id == output_id(parent.message_id, 0)
    assert parent.derive(**{**kwargs, "index": 1}).message_id != first.message_id  # type: ignore[arg-type]
    assert first.correlation_id == parent.correlation_id
    assert first.causation_id == parent.message_id
    assert (first.deadline, first.reply_to, first.budget_usd) == (
        parent.deadline,
        parent.reply_to,
        parent.budget_usd,
    )
    assert first.hops == parent.hops + 1


def test_codec_round_trip_returns_typed_payload() -> None:
    codec = Codec(SchemaRegistry([UserRequest]))
    msg = message(UserRequest(text="hello"))
    decoded = codec.decode(codec.encode(msg, STREAM), STREAM)
    assert decoded.message == msg
    assert decoded.payload == UserRequest(text="hello")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"m": b"\xff\xfe not json"}, "undecodable"),
        ({b"x": b"no m field"}, "undecodable"),
        ({b"m": b"[1, 2]"}, "invalid"),
        ({b"m": b"{" + b" " * 5000 + b"}"}, "oversize"),
    ],
)
def test_codec_rejects_bad_bytes_with_reason(fields: dict[bytes, bytes], reason: str) -> None:
    codec = Codec(SchemaRegistry([UserRequest]), max_bytes=4096)
    with pytest.raises(DecodeError) as info:
        codec.decode(fields, STREAM)
    assert info.value.reason == reason


def test_size_cap_is_checked_before_parsing() -> None:
    codec = Codec(SchemaRegistry([UserRequest]), max_bytes=1024)
    huge_but_valid = message(UserRequest(text="x" * 2000))
    big = {b"m": huge_but_valid.model_dump_json().encode()}
    with pytest.raises(DecodeError, match="oversize"):
        codec.decode(big, STREAM)
    with pytest.raises(DecodeError, match="oversize"):
        codec.encode(huge_but_valid, STREAM)


def test_codec_names_wrong_schema_and_unknown_type() -> None:
    codec = Codec(SchemaRegistry([UserRequest]))
    wrong = message(UserRequest(text="x"), payload={"txt": "y"})
    with pytest.raises(DecodeError) as info:
        codec.decode({b"m": wrong.model_dump_json().encode()}, STREAM)
    assert info.value.reason == "invalid"
    assert "payload of user.request" in str(info.value)
    stranger = message(GreetingV1(name="x"))
    with pytest.raises(DecodeError) as info:
        codec.decode({b"m": stranger.model_dump_json().encode()}, STREAM)
    assert info.value.reason == "unknown_type"


def test_signatures_cover_the_exact_bytes_and_the_stream() -> None:
    registry = SchemaRegistry([UserRequest])
    signer = Codec(registry, signing_key=b"k1-long-enough-key")
    fields = signer.encode(message(UserRequest(text="hi")), "ar:inbox:echo")
    assert signer.decode(fields, "ar:inbox:echo").payload == UserRequest(text="hi")
    tampered = {**fields, b"m": fields[b"m"].replace(b"hi", b"ho")}
    other_key = Codec(registry, signing_key=b"k2-long-enough-key")
    for bad, stream in (
        (tampered, "ar:inbox:echo"),
        ({b"m": fields[b"m"]}, "ar:inbox:echo"),  # unsigned
        (other_key.encode(message(UserRequest(text="hi")), "ar:inbox:echo"), "ar:inbox:echo"),
        (fields, "ar:inbox:sink"),  # a valid entry copied to another stream
        ({**fields, b"k": b"00000000"}, "ar:inbox:echo"),  # names a key nobody has
    ):
        with pytest.raises(DecodeError) as info:
            signer.decode(bad, stream)
        assert info.value.reason == "bad_signature"


def test_a_signed_codec_refuses_to_encode_without_the_stream() -> None:
    with pytest.raises(ValueError, match="destination stream"):
        Codec(SchemaRegistry([UserRequest]), signing_key=b"k").encode(
            message(UserRequest(text="x")), ""
        )


def test_versions_n_and_n_minus_1_are_readable_older_is_not() -> None:
    registry = SchemaRegistry([GreetingV3])
    assert registry.current("test.greeting") is GreetingV3
    upgraded = registry.parse("test.greeting", 2, {"name": "ada", "language": "fr"})
    assert upgraded == GreetingV3(name="ada", language="fr")
    assert registry.parse("test.greeting", 3, {"name": "b", "language": "de"}).name == "b"
    codec = Codec(registry)
    with pytest.raises(DecodeError) as info:
        codec.decode(codec.encode(message(GreetingV1(name="old")), STREAM), STREAM)
    assert info.value.reason == "unknown_version"
    assert "reads v3 and v2" in str(info.value)


def test_registry_refuses_two_models_for_one_version() -> None:
    class Other(Payload):
        message_type = "test.greeting"
        schema_version = 1
        nickname: str

    registry = SchemaRegistry([GreetingV1])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Other)


def _wire(message_id: str, correlation_id: str, payload: str = '{"text":"hi"}') -> bytes:
    return (
        f'{{"message_id":"{message_id}","correlation_id":"{correlation_id}",'
        f'"from_agent":"client","to_agent":"echo","message_type":"user.request",'
        f'"schema_version":1,"payload":{payload},"timestamp":"2026-01-01T00:00:00Z"}}'
    ).encode()


A, B, C = (str(uuid.uuid4()) for _ in range(3))


@pytest.mark.parametrize(
    "data",
    [
        _wire(A, B),  # as the runtime writes it: texts taken from the bytes
        _wire(A.upper(), B.upper()),  # non-canonical case
        _wire(A.replace("-", ""), B),  # no hyphens
        _wire(A, B, payload=f'{{"text":"hi","metadata":{{"message_id":"{C}"}}}}'),  # payload key
        (
            f'{{"correlation_id":"{B}","message_id":"{A}","from_agent":"client",'
            '"to_agent":"echo","message_type":"user.request","schema_version":1,'
            '"payload":{"text":"hi"},"timestamp":"2026-01-01T00:00:00Z"}'
        ).encode(),  # other field order
        _wire(A, B).replace(b'"message_id"', b'"message_id" ', 1),  # whitespace
    ],
)
def test_id_texts_always_equal_the_parsed_ids(data: bytes) -> None:
    """The worker's id texts (done marks, traces) are taken from the envelope bytes when that
    is exact; whatever the bytes look like, they equal the ids the envelope was parsed to."""
    message = Codec(SchemaRegistry([UserRequest])).decode({b"m": data}, STREAM).message
    assert message.id_text == str(message.message_id) == str(uuid.UUID(A))
    assert message.correlation_text == str(message.correlation_id) == str(uuid.UUID(B))


def test_duplicate_id_keys_never_give_a_text_other_than_the_parsed_id() -> None:
    data = _wire(A, B)[:-1] + f',"message_id":"{C}"}}'.encode()
    try:
        message = Codec(SchemaRegistry([UserRequest])).decode({b"m": data}, STREAM).message
    except DecodeError:
        return  # refusing the entry is fine too
    assert message.id_text == str(message.message_id)


_id_chars = st.text(alphabet='0123456789abcdefABCDEF-{}x\\"', min_size=30, max_size=40)
_mixed_case = st.tuples(st.uuids(), st.lists(st.booleans(), min_size=36, max_size=36)).map(
    lambda pair: "".join(
        c.upper() if up else c for c, up in zip(str(pair[0]), pair[1], strict=True)
    )
)
_ids = st.one_of(_id_chars, _mixed_case, st.uuids().map(str), st.uuids().map(lambda u: u.hex))


@settings(max_examples=300)
@given(message_id=_ids, correlation_id=_ids)
def test_id_texts_equal_the_parsed_ids_for_any_id_text(
    message_id: str, correlation_id: str
) -> None:
    """Whatever stands between the id quotes (any length, case, hyphens, quotes, escapes):
    when the envelope decodes, the texts the worker keeps are the ids' str()."""
    data = _wire(message_id, correlation_id)
    try:
        message = Codec(SchemaRegistry([UserRequest])).decode({b"m": data}, STREAM).message
    except DecodeError:
        return
    assert message.id_text == str(message.message_id)
    assert message.correlation_text == str(message.correlation_id)
