"""The ``AgentMessage`` envelope: what travels on every stream, as one JSON field."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Namespace of deterministic output ids (uuid5 of input message id + output index).
OUTPUT_ID_NAMESPACE = uuid.UUID("6f1d7c1e-2a55-4d0b-9a7e-3c1b5e9a0f42")

MESSAGE_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
AGENT_NAME_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
TRACEPARENT = re.compile(TRACEPARENT_PATTERN)

AgentName = Annotated[str, Field(pattern=AGENT_NAME_PATTERN)]
MessageType = Annotated[str, Field(pattern=MESSAGE_TYPE_PATTERN, max_length=128)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a W3C ``traceparent`` value, or None."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2]


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def output_id(input_message_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id of output ``index`` of handling ``input_message_id``: same input, same ids:
    ``uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{input_message_id}:{index}")``."""
    return _output_id(str(input_message_id), index)[0]


def _output_id(input_text: str, index: int) -> tuple[uuid.UUID, str]:
    """:func:`output_id` of the input id's text, and the output id's text, computed without
    ``uuid.uuid5``'s Python-level steps: the namespace is hashed once per process and the
    UUID is made from the digest as ``UUID.__init__`` makes it (the same two attributes),
    without its argument checks; the text is formatted from the same number (the worker's
    trace record needs it). Measured: 21,183 instructions per output against 38,860 for
    ``uuid5`` plus 8,982 for ``str`` of the id (docs/benchmarks.md, "Issue 17: handler and
    output path")."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update(f"{input_text}:{index}".encode())
    number = (int.from_bytes(digest.digest()[:16]) & _VERSION_CLEAR) | _VERSION_5
    value = object.__new__(uuid.UUID)
    _set(value, "int", number)
    _set(value, "is_safe", _SAFE_UNKNOWN)
    hex_ = f"{number:032x}"
    return value, f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


_NAMESPACE_SHA1 = hashlib.sha1(OUTPUT_ID_NAMESPACE.bytes, usedforsecurity=False)
# What UUID(bytes=..., version=5) does to the digest: the variant bits (RFC 4122) and version 5.
_VERSION_CLEAR = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_VERSION_5 = (0x8000 << 48) | (5 << 76)
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_set = object.__setattr__


class AgentMessage(BaseModel):
    """One typed message between agents. Frozen and strict; unknown fields are errors.

    ``payload`` holds the JSON form of the payload model registered for
    (``message_type``, ``schema_version``); the codec validates it on receipt. The HMAC
    signature is not a field: it covers the exact envelope bytes and travels beside them in
    the stream entry, so it is checked before any parsing (see agent_runtime/codec.py).
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    message_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    from_agent: str = Field(max_length=64)
    to_agent: AgentName
    message_type: MessageType
    schema_version: int = Field(ge=1, le=10_000)
    payload: dict[str, Any]
    timestamp: AwareDatetime  # checked in pydantic-core: no Python validator per message
    deadline: AwareDatetime | None = None
    hops: int = Field(default=0, ge=0, le=1_000)
    reply_to: str | None = Field(default=None, max_length=512)
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)
    budget_usd: float | None = Field(default=None, ge=0)

    MAX_HOPS: ClassVar[int] = 64

    @cached_property
    def id_text(self) -> str:
        """``str(message_id)``, computed once (the worker's hot path needs it several times)."""
        return str(self.message_id)

    @cached_property
    def correlation_text(self) -> str:
        """``str(correlation_id)``, computed once."""
        return str(self.correlation_id)

    def is_expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline

    def derive(
        self,
        *,
        index: int,
        from_agent: str,
        to_agent: str,
        message_type: str,
        schema_version: int,
        payload: dict[str, Any],
        now: datetime,
        traceparent: str | None = None,
        message_id: uuid.UUID | None = None,
    ) -> AgentMessage:
        """The ``index``-th output of handling this message (deterministic id, inherited
        correlation, deadline, reply stream and budget). ``traceparent``: the output's trace
        context (default: this message's; handlers' outputs get :meth:`hop_traceparent`).
        ``message_id``: a deterministic id chosen by the caller instead of the derived one.

        The fields this message gives were validated with it, so the output is built without
        a second validation when every other argument is one of the checked kinds
        (:func:`_trusted`); anything else goes through the model's validation, errors
        included, as before."""
        hops = self.hops + 1
        if traceparent is None:
            traceparent = self.traceparent
        id_text = None
        if message_id is None:
            message_id, id_text = _output_id(self.id_text, index)
        if (
            type(message_id) is uuid.UUID
            and hops <= _MAX_HOPS_FIELD
            and type(now) is datetime
            and (now.tzinfo is UTC or now.utcoffset() is not None)
            and type(payload) is dict
            and _valid_names(from_agent, to_agent, message_type, schema_version)
            and (
                traceparent is None
                or (type(traceparent) is str and TRACEPARENT.fullmatch(traceparent) is not None)
            )
            and _ONLY_STR(map(type, payload))  # every key a str (strict dict[str, Any])
        ):
            fields = {
                "message_id": message_id,
                "correlation_id": self.correlation_id,
                "causation_id": self.message_id,
                "from_agent": from_agent,
                "to_agent": to_agent,
                "message_type": message_type,
                "schema_version": schema_version,
                "payload": dict(payload),  # validation copies the dict too
                "timestamp": now,
                "deadline": self.deadline,
                "hops": hops,
                "reply_to": self.reply_to,
                "traceparent": traceparent,
                "budget_usd": self.budget_usd,
            }
            # the cached_property values (the trace record and the commit use both)
            fields["correlation_text"] = self.correlation_text
            if id_text is not None:
                fields["id_text"] = id_text
            return _trusted(fields)
        return AgentMessage(
            message_id=message_id,
            correlation_id=self.correlation_id,
            causation_id=self.message_id,
            from_agent=from_agent,
            to_agent=to_agent,
            message_type=message_type,
            schema_version=schema_version,
            payload=payload,
            timestamp=now,
            deadline=self.deadline,
            hops=hops,
            reply_to=self.reply_to,
            traceparent=traceparent,
            budget_usd=self.budget_usd,
        )

    def hop_traceparent(self) -> str:
        """The W3C trace context of this message's outputs: the trace continues (the incoming
        ``traceparent``'s trace id, else the correlation id, a UUID being 32 hex digits) and
        this hop's span id is derived from the message id, so spans link hop by hop. With an
        OpenTelemetry SDK the worker's TraceContextMiddleware puts its real span id there."""
        parsed = parse_traceparent(self.traceparent)
        # the hex digits from the cached id texts: UUID.hex formats the number again
        trace_id = parsed[0] if parsed else self.correlation_text.replace("-", "")
        ids = self.id_text
        return f"00-{trace_id}-{ids[:8]}{ids[9:13]}{ids[14:18]}-01"


# ---------------------------------------------------------------- outputs without revalidation
# A handler's output inherits most of its fields from the input, which was validated when it
# was decoded; what the handler adds (names, type, version, payload, time, trace context) is
# checked here with the model's own rules, names once per process. Then the model is built as
# pydantic's ``model_construct`` builds it (its ``__dict__`` and the three pydantic slots),
# without its per-field Python loop. Measured: ``derive`` 83,885 -> 50,687 instructions per output
# with the output id (above); the forwarding stage, with the rest of that session, 486,558 ->
# 428,569 per message
# (docs/benchmarks.md, "Issue 17: handler and output path"); tests/hostile/
# test_envelope_derive.py checks that the bytes are those of a validated build.

_MAX_HOPS_FIELD = 1_000  # AgentMessage.hops: le=1_000
_FIELDS_SET = set(AgentMessage.model_fields)
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)
_MESSAGE_TYPE = re.compile(MESSAGE_TYPE_PATTERN)
#: (from_agent, to_agent, message_type, schema_version) seen valid (a few per process)
_VALID_NAMES: set[tuple[str, str, str, int]] = set()
_ONLY_STR = {str}.issuperset


def _valid_names(from_agent: Any, to_agent: Any, message_type: Any, version: Any) -> bool:
    # The types first: the cache's tuples compare equal across types (True == 1, str subclasses)
    if not (
        type(version) is int
        and type(from_agent) is str
        and type(to_agent) is str
        and type(message_type) is str
    ):
        return False
    names = (from_agent, to_agent, message_type, version)
    if names in _VALID_NAMES:
        return True
    valid = (
        len(from_agent) <= 64
        and _AGENT_NAME.fullmatch(to_agent) is not None
        and len(message_type) <= 128
        and _MESSAGE_TYPE.fullmatch(message_type) is not None
        and 1 <= version <= 10_000
    )
    if valid and len(_VALID_NAMES) < 4096:
        _VALID_NAMES.add(names)
    return valid


def _trusted(fields: dict[str, Any], fields_set: Iterable[str] = _FIELDS_SET) -> AgentMessage:
    """An :class:`AgentMessage` of ``fields`` (every field, each already valid), unvalidated,
    as ``model_construct`` builds it; ``fields_set``: what its ``model_fields_set`` says."""
    message = object.__new__(AgentMessage)
    _set(message, "__dict__", fields)
    _set(message, "__pydantic_fields_set__", set(fields_set))
    _set(message, "__pydantic_extra__", None)
    _set(message, "__pydantic_private__", None)
    return message


# -- Trusted builds (issue 17, lean publish) ---------------------------------------------------
#
# Hot-path trick: a client's request envelope is built from parts the runtime set itself (ids,
# timestamps, hops) or checked once per distinct value (destination, message type and version:
# agent_runtime/client.py), so it skips the model's validation, and its JSON comes from the
# model's own serializer (the bytes ``model_dump_json()`` gives, without the str round trip).
# The two ids come from one ``os.urandom(32)``, set as ``uuid.UUID(version=4)`` sets them.
# Measured gain (callgrind, instructions per call; docs/benchmarks.md "Issue 17: lean publish
# (session 8)"): a client's request envelope and its JSON 133,663 -> 89,061 (of which the JSON
# 32,428 -> 23,847 and the two ids 26,685 -> 14,615).

#: the fields a request built by AgentMessage(...) has set (``model_fields_set``)
_REQUEST_FIELDS = frozenset(AgentMessage.model_fields) - {"causation_id", "hops", "traceparent"}
_to_json = AgentMessage.__pydantic_serializer__.to_json
_LOW_128 = (1 << 128) - 1
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)
_UNKNOWN = uuid.SafeUUID.unknown


def _uuid4_of(number: int) -> uuid.UUID:
    """``uuid.UUID(int=number, version=4)`` without the checks of ``UUID.__init__``."""
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", (number & _V4_CLEAR) | _V4_SET)
    object.__setattr__(value, "is_safe", _UNKNOWN)
    return value


def random_ids() -> tuple[uuid.UUID, uuid.UUID]:
    """Two random version-4 UUIDs (as two ``uuid.uuid4()``) from one ``os.urandom(32)``."""
    number = int.from_bytes(os.urandom(32))
    return _uuid4_of(number >> 128), _uuid4_of(number & _LOW_128)


def trusted_request(
    *,
    message_id: uuid.UUID,
    correlation_id: uuid.UUID,
    from_agent: str,
    to_agent: str,
    message_type: str,
    schema_version: int,
    payload: dict[str, Any],
    timestamp: datetime,
    deadline: datetime | None,
    reply_to: str | None,
) -> tuple[AgentMessage, bytes]:
    """A new request envelope (no causation, 0 hops, no traceparent, no budget) and its JSON,
    built WITHOUT validation: every argument must already be what validation would accept
    (UUIDs, aware datetimes, ``payload`` in JSON form, the names and ``schema_version``
    within the field limits). The JSON is byte-identical to ``model_dump_json()``
    (tests/hostile/test_trusted_envelope.py checks both against the validated model)."""
    values = {
        "message_id": message_id,
        "correlation_id": correlation_id,
        "causation_id": None,
        "from_agent": from_agent,
        "to_agent": to_agent,
        "message_type": message_type,
        "schema_version": schema_version,
        "payload": payload,
        "timestamp": timestamp,
        "deadline": deadline,
        "hops": 0,
        "reply_to": reply_to,
        "traceparent": None,
        "budget_usd": None,
    }
    message = _trusted(values, _REQUEST_FIELDS)
    return message, _to_json(message)
