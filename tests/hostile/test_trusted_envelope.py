"""The lean publish path builds request envelopes without validation
(``protocols.envelope.trusted_request``, ``Client._build``): for any valid input its object and
its JSON must be exactly what the validated model gives, and the bytes it signs must decode
(``Codec.decode``, signature verified) to the same envelope and payload as the model path's."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.client import Client
from agent_runtime.config.model import PipelineConfig
from agent_runtime.config.pipeline import Pipeline
from protocols.core import UserRequest
from protocols.envelope import (
    AGENT_NAME_PATTERN,
    MESSAGE_TYPE_PATTERN,
    AgentMessage,
    random_ids,
    trusted_request,
)

ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=8)),
        timezone(timedelta(0)),
    ]
)
MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=ZONES
)
TIMEOUTS = st.floats(min_value=0, max_value=10**7, allow_nan=False) | st.integers(0, 10**7)
NO_SURROGATES = st.characters(blacklist_categories=("Cs",))  # not encodable, on any path
TEXTS = st.text(NO_SURROGATES, min_size=1, max_size=40).filter(str.strip)


# JSON as a payload model dumps it (an infinite float would be ``null`` on any path)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(NO_SURROGATES, max_size=12),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(NO_SURROGATES, max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)

LOWER = "abcdefghijklmnopqrstuvwxyz"
# the field patterns' languages, drawn directly (st.from_regex is slow); checked below
AGENT_NAMES = st.builds(
    str.__add__, st.sampled_from(LOWER), st.text(LOWER + "0123456789_-", max_size=62)
)
_SEGMENTS = st.builds(
    str.__add__, st.sampled_from(LOWER), st.text(LOWER + "0123456789_", max_size=12)
)
MESSAGE_TYPES = st.lists(_SEGMENTS, min_size=2, max_size=4).map(".".join)


@given(AGENT_NAMES, MESSAGE_TYPES)
def test_the_name_strategies_draw_valid_names(agent: str, message_type: str) -> None:
    assert re.fullmatch(AGENT_NAME_PATTERN, agent)
    assert re.fullmatch(MESSAGE_TYPE_PATTERN, message_type) and len(message_type) <= 128


def _payloads() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(NO_SURROGATES, max_size=8), JSON_VALUES, max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.tuples(st.uuids(), st.uuids()) | st.builds(random_ids),
    to_agent=AGENT_NAMES,
    message_type=MESSAGE_TYPES,
    version=st.integers(1, 10_000),
    payload=_payloads(),
    now=MOMENTS,
    timeout=st.none() | TIMEOUTS,
    reply_to=st.none() | st.text(NO_SURROGATES, max_size=512),
)
def test_a_trusted_request_is_the_validated_model_byte_for_byte(
    ids: tuple[uuid.UUID, uuid.UUID],
    to_agent: str,
    message_type: str,
    version: int,
    payload: dict[str, Any],
    now: datetime,
    timeout: float | None,
    reply_to: str | None,
) -> None:
    fields: dict[str, Any] = {
        "message_id": ids[0],
        "correlation_id": ids[1],
        "from_agent": "client",
        "to_agent": to_agent,
        "message_type": message_type,
        "schema_version": version,
        "payload": payload,
        "timestamp": now,
        "deadline": None if timeout is None else now + timedelta(seconds=timeout),
        "reply_to": reply_to,
    }
    validated = AgentMessage(**fields, budget_usd=None)
    trusted, data = trusted_request(**fields)
    assert data == validated.model_dump_json().encode()
    assert trusted == validated
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.model_dump() == validated.model_dump()
    assert AgentMessage.model_validate_json(data) == validated


def test_random_ids_are_version_4_uuids_as_uuid4_makes_them() -> None:
    for _ in range(200):
        a, b = random_ids()
        for value in (a, b):
            assert type(value) is uuid.UUID
            assert value.version == 4 and value.variant == uuid.RFC_4122
            assert uuid.UUID(str(value)) == value and hash(uuid.UUID(str(value))) == hash(value)
            assert uuid.UUID(bytes=value.bytes, version=4) == value
        assert a != b


PIPELINE = Pipeline.build(
    PipelineConfig.model_validate(
        {
            "key_prefix": "lean",
            "allowed_modules": ["tests.fixtures"],
            "agents": {
                "echo": {"class": "tests.fixtures.agents:Echo"},
                "sink": {"class": "tests.fixtures.agents:Sink"},
            },
        }
    )
)

CLIENT = Client(redis.asyncio.Redis(), PIPELINE)  # never connects: only builds envelopes
CODEC = PIPELINE.codec()  # the worker's side: verifies the signature


@settings(max_examples=100, deadline=None)
@given(
    text=TEXTS,
    metadata=_payloads(),
    to=st.sampled_from([None, "echo", "sink"]),
    timeout=st.none() | TIMEOUTS,
    now=MOMENTS,
    correlation=st.none() | st.uuids(),
)
def test_the_client_signs_bytes_that_decode_to_the_validated_envelope(
    text: str,
    metadata: dict[str, Any],
    to: str | None,
    timeout: float | None,
    now: datetime,
    correlation: uuid.UUID | None,
) -> None:
    client = CLIENT
    payload = UserRequest(text=text, metadata=metadata)
    options: dict[str, Any] = {"to": to, "timeout": timeout, "now": now}
    client._build(payload, **options)  # the first of a route takes the validated path
    message, data = client._build(payload, correlation_id=correlation, **options)
    assert data is not None  # the lean path
    stream = PIPELINE.routing.stream_for(message.to_agent, message.correlation_id)
    decoded = CODEC.decode(client.codec.encode_json(data, stream), stream)
    fields = message.model_dump()
    fields.pop("budget_usd")  # the model path's own arguments: no causation, hops, traceparent
    for unset in ("causation_id", "hops", "traceparent"):
        fields.pop(unset)
    validated = AgentMessage(**fields, budget_usd=None)
    assert decoded.message == validated == message
    assert decoded.payload == payload
    assert data == client.codec.encode(validated, stream)[b"m"]
