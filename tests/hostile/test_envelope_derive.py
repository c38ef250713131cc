"""``AgentMessage.derive`` builds outputs without a second validation when every argument is of
a checked kind (protocols/envelope.py ``_trusted``): for any input envelope and any arguments,
it must give what the validating build gives -- the same model, the same JSON bytes, the same
signed entry, decoded back identically -- or raise the ValidationError that build raises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, ValidationError

from agent_runtime.codec import FIELD_MESSAGE, Codec
from agent_runtime.signing import Keyring
from agent_runtime.transport.keys import Keys
from protocols.base import Payload, SchemaRegistry
from protocols.envelope import OUTPUT_ID_NAMESPACE, AgentMessage, output_id

KEYS = Keys()
STREAM = "ar:inbox:next"


class Anything(Payload):
    """Takes any JSON object: the round trip through the codec checks the envelope."""

    model_config = ConfigDict(frozen=True, extra="allow")
    message_type = "test.anything"


CODEC = Codec(SchemaRegistry([Anything]), keyring=Keyring.of(b"k" * 32), keys=KEYS)

json_values = st.recursive(  # JSON's own values: no NaN, no infinities
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
names = st.one_of(
    st.sampled_from(["client", "s2", "router", "a-b_c", "x" * 63]),
    st.text(max_size=70),  # mostly invalid agent names
)
message_types = st.one_of(
    st.sampled_from(["test.anything", "bench.hop", "a.b.c_d"]),
    st.text(max_size=20),
    st.just("a." + "b" * 130),
)
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(
        timezones=st.sampled_from([timezone(timedelta(hours=5)), timezone(timedelta(0), "Z0")])
    ),
    st.datetimes(),  # naive: invalid
)
traceparents = st.one_of(
    st.none(),
    st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
    st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01\n"),
    st.text(max_size=60),
)
payloads = st.one_of(
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),  # non-str keys
)


@st.composite
def inputs(draw: st.DrawFn) -> AgentMessage:
    cid = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    now = draw(st.datetimes(timezones=st.just(UTC)))
    return AgentMessage(
        message_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        correlation_id=cid,
        causation_id=draw(st.none() | st.uuids()),
        from_agent="client",
        to_agent="noop",
        message_type="test.anything",
        schema_version=1,
        payload={},
        timestamp=now,
        deadline=draw(st.none() | st.just(now + timedelta(seconds=30))),
        hops=draw(st.sampled_from([0, 1, 63, 999, 1000])),
        reply_to=draw(st.none() | st.just(KEYS.reply(str(cid)))),
        traceparent=draw(st.none() | st.just("00-" + "c" * 32 + "-" + "d" * 16 + "-00")),
        budget_usd=draw(st.none() | st.floats(0, 1e6)),
    )


def validated(message: AgentMessage, args: dict[str, Any]) -> AgentMessage:
    """The output as derive built it before: every field through the model's validation."""
    message_id = args["message_id"]
    if message_id is None:
        message_id = uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{message.message_id}:{args['index']}")
    traceparent = args["traceparent"]
    return AgentMessage(
        message_id=message_id,
        correlation_id=message.correlation_id,
        causation_id=message.message_id,
        from_agent=args["from_agent"],
        to_agent=args["to_agent"],
        message_type=args["message_type"],
        schema_version=args["schema_version"],
        payload=args["payload"],
        timestamp=args["now"],
        deadline=message.deadline,
        hops=message.hops + 1,
        reply_to=message.reply_to,
        traceparent=message.traceparent if traceparent is None else traceparent,
        budget_usd=message.budget_usd,
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=inputs(),
    cached=st.booleans(),
    args=st.fixed_dictionaries(
        {
            "index": st.integers(0, 1000),
            "from_agent": names,
            "to_agent": names,
            "message_type": message_types,
            "schema_version": st.one_of(st.integers(-1, 10_001), st.just(True)),
            "payload": payloads,
            "now": times,
            "traceparent": traceparents,
            "message_id": st.none() | st.uuids(),
        }
    ),
)
def test_derive_is_the_validated_build(
    message: AgentMessage, cached: bool, args: dict[str, Any]
) -> None:
    if cached:  # as the codec leaves a decoded message: the id texts already cached
        _ = message.id_text, message.correlation_text
    try:
        expected = validated(message, args)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as raised:
            message.derive(**args)
        assert raised.value.errors(include_url=False) == exc.errors(include_url=False)
        return
    derived = message.derive(**args)
    assert derived == expected
    assert derived.model_fields_set == expected.model_fields_set
    assert derived.id_text == str(expected.message_id)
    assert derived.correlation_text == str(expected.correlation_id)
    data = derived.model_dump_json().encode()
    assert data == expected.model_dump_json().encode()
    assert AgentMessage.model_validate_json(data) == derived
    fields = CODEC.encode(derived, STREAM)
    assert fields == CODEC.encode(expected, STREAM)
    assert fields[FIELD_MESSAGE] == data


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(message=inputs(), payload=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_derived_output_decodes_back_identically(
    message: AgentMessage, payload: dict[str, Any]
) -> None:
    if message.hops >= 1000:
        return  # the output would have hops 1001: refused, as the test above checks
    now = datetime.now(UTC)
    derived = message.derive(
        index=0,
        from_agent="noop",
        to_agent="next",
        message_type="test.anything",
        schema_version=1,
        payload=payload,
        now=now,
        traceparent=message.hop_traceparent(),
    )
    decoded, body = CODEC.decode(CODEC.encode(derived, STREAM), STREAM)
    assert decoded == derived
    assert decoded.model_dump_json() == derived.model_dump_json()
    assert body.model_dump(mode="json") == payload


@given(st.uuids(), st.integers(0, 10_000))
def test_output_id_is_uuid5(input_id: uuid.UUID, index: int) -> None:
    made = output_id(input_id, index)
    expected = uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{input_id}:{index}")
    assert made == expected
    assert str(made) == str(expected)
    assert hash(made) == hash(expected)
    assert made.is_safe == expected.is_safe
