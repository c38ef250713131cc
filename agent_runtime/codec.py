"""Envelope <-> stream entry fields. Checks run cheapest first: size cap, signature (HMAC over
the exact bytes), nesting depth (``limits.too_deep``, before any JSON parsing), JSON + envelope
schema, the ``reply_to`` rule, then the payload model for (type, version).

``reply_to`` may name only this pipeline's reply stream of the message's own correlation id
(``keys.reply(correlation_id)``) or a stream the pipeline config allow-lists
(``reply_streams``); anything else is ``invalid``: an entry cannot make a worker write into an
inbox, a dead-letter stream or a key of another type.

A stream entry is ``{b"m": <envelope JSON>, b"s": <hex HMAC-SHA256>, b"k": <key id>}`` when
signing is on (the default; agent_runtime/signing.py has the keys). The MAC covers the stream
the entry is written to and the exact envelope bytes: one HMAC over bytes already at hand, no
second JSON pass. An entry without a signature, with a key id the ring does not know, or whose
MAC does not match (forged, tampered, copied to another stream) is ``bad_signature``. A codec
without a key ring (``signing: off``) writes ``{b"m": ...}`` only and checks nothing.
Every failure raises :class:`DecodeError` with a reason code that ends up in the dead-letter
entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from pydantic import ValidationError

from agent_runtime.errors import DecodeError
from agent_runtime.limits import MAX_ERROR_TEXT, depth_error, too_deep
from agent_runtime.signing import Keyring
from agent_runtime.transport.keys import Keys
from protocols.base import Payload, SchemaRegistry, UnknownSchema
from protocols.envelope import AgentMessage

FIELD_MESSAGE = b"m"
FIELD_SIGNATURE = b"s"
FIELD_KEY_ID = b"k"
DEFAULT_MAX_BYTES = 256 * 1024


class Decoded(NamedTuple):
    """A decoded entry: the envelope and its payload as the current model of its type."""

    message: AgentMessage
    payload: Payload


_validate_envelope = AgentMessage.__pydantic_validator__.validate_json  # model_validate_json
_dump_envelope = AgentMessage.__pydantic_serializer__.to_json  # model_dump_json, as bytes


# The envelope as this runtime writes it starts with both ids in canonical form. When it does,
# and each key occurs once in the bytes (so it is the envelope's own key, not a duplicate or a
# payload key), the id texts are taken from the bytes instead of str(UUID), a Python-level
# formatting that costs more than the rest of the worker's per-message bookkeeping. Measured
# gain: 14,430 instructions per message, 7.7 % of the runtime's (docs/benchmarks.md, "Speed
# tricks, measured"). One character class for the 36 characters (no quote, no backslash: the
# whole JSON string) instead of the 8-4-4-4-12 groups: the value parsed as a UUID, and the
# only 36-character form that parses is the hyphenated one, so it is str(UUID) when its hex
# digits are lowercase. 6,654 -> 5,229 instructions per match under callgrind.
_UUID_TEXT = rb"([-0-9a-f]{36})"
_ID_HEAD = re.compile(
    rb'\{"message_id":"' + _UUID_TEXT + rb'","correlation_id":"' + _UUID_TEXT + rb'"'
)


def _keep_id_texts(message: AgentMessage, data: bytes) -> None:
    """Fill ``message.id_text``/``correlation_text`` from ``data`` when that is exact."""
    head = _ID_HEAD.match(data)
    if (
        head is not None
        and data.count(b'"message_id"') == 1
        and data.count(b'"correlation_id"') == 1
    ):
        cached = message.__dict__  # where functools.cached_property keeps its value
        cached["id_text"] = head[1].decode()
        cached["correlation_text"] = head[2].decode()


class Codec:
    """Encodes and decodes envelopes for one process. Stateless after construction."""

    def __init__(
        self,
        schemas: SchemaRegistry,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        signing_key: bytes | None = None,
        keyring: Keyring | None = None,
        keys: Keys | None = None,
        reply_streams: Iterable[str] = (),
    ) -> None:
        """``keyring`` (or a single ``signing_key``) signs and verifies; neither: unsigned."""
        self.schemas = schemas
        self.max_bytes = max_bytes
        if keyring is None and signing_key is not None:
            keyring = Keyring.of(signing_key)
        self.keyring = keyring
        self._reply = (keys or Keys()).reply
        self._reply_streams = frozenset(reply_streams)

    @property
    def signed(self) -> bool:
        return self.keyring is not None

    def encode(self, message: AgentMessage, stream: str) -> dict[bytes, bytes]:
        """The entry fields of ``message`` to be written to ``stream`` (signed codecs bind
        the MAC to it, so it must be the stream the entry is written to; required even
        unsigned, so that no call site works only while signing is off)."""
        return self.encode_json(_dump_envelope(message), stream)

    def encode_json(self, data: bytes, stream: str) -> dict[bytes, bytes]:
        """As :meth:`encode`, of an envelope's JSON built elsewhere (the client's lean
        publish: ``protocols.envelope.trusted_request``)."""
        if len(data) > self.max_bytes:
            raise DecodeError("oversize", f"envelope is {len(data)} bytes, cap is {self.max_bytes}")
        if self.keyring is None:
            return {FIELD_MESSAGE: data}
        if not stream:
            raise ValueError("a signed codec needs the destination stream to encode")
        kid, mac = self.keyring.sign(stream, data)
        return {FIELD_MESSAGE: data, FIELD_SIGNATURE: mac, FIELD_KEY_ID: kid}

    def sign_fields(self, fields: dict[bytes, bytes], stream: str) -> dict[bytes, bytes]:
        """``fields`` (an entry's envelope, e.g. a dead letter's original) signed anew for
        ``stream`` with the current signing key; unchanged without a key ring."""
        out = {k: v for k, v in fields.items() if k not in (FIELD_SIGNATURE, FIELD_KEY_ID)}
        if self.keyring is not None:
            kid, mac = self.keyring.sign(stream, out[FIELD_MESSAGE])
            out[FIELD_SIGNATURE], out[FIELD_KEY_ID] = mac, kid
        return out

    def decode(self, fields: dict[bytes, bytes], stream: str) -> Decoded:
        """The entry read from ``stream`` decoded and checked (see the module doc)."""
        data = fields.get(FIELD_MESSAGE)
        if data is None:
            raise DecodeError("undecodable", f"entry has no {FIELD_MESSAGE!r} field")
        if len(data) > self.max_bytes:
            raise DecodeError("oversize", f"envelope is {len(data)} bytes, cap is {self.max_bytes}")
        if self.keyring is not None:
            self._verify(stream, data, fields)
        if too_deep(data):
            raise DecodeError("undecodable", depth_error())
        try:
            message = _validate_envelope(data)
        except ValidationError as exc:
            raise DecodeError(_json_or_schema(exc), _summary(exc)) from exc
        _keep_id_texts(message, data)
        reply_to = message.reply_to
        if reply_to is not None and reply_to not in self._reply_streams:
            self._check_reply(reply_to, message)
        try:
            payload = self.schemas.parse(
                message.message_type, message.schema_version, message.payload
            )
        except UnknownSchema as exc:
            raise DecodeError(exc.reason, str(exc), message) from exc
        except ValidationError as exc:
            text = f"payload of {message.message_type}: {_summary(exc)}"
            raise DecodeError("invalid", text, message) from exc
        return Decoded(message, payload)

    def _check_reply(self, reply_to: str, message: AgentMessage) -> None:
        """Raise ``invalid`` for a ``reply_to`` other than the request's own reply stream.
        The error carries no envelope: no failure reply may go to that stream."""
        if reply_to != self._reply(message.correlation_text):
            raise DecodeError(
                "invalid",
                f"reply_to {reply_to[:80]!r} is neither this request's reply stream "
                f"{self._reply(message.correlation_text)!r} nor an allow-listed reply stream",
            )

    def _verify(self, stream: str, data: bytes, fields: dict[bytes, bytes]) -> None:
        assert self.keyring is not None
        signature = fields.get(FIELD_SIGNATURE)
        if signature is None:
            raise DecodeError("bad_signature", "entry is not signed and signing is required")
        problem = self.keyring.verify(stream, data, fields.get(FIELD_KEY_ID), signature)
        if problem:
            raise DecodeError("bad_signature", problem)


def _json_or_schema(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    return "undecodable" if any(e["type"] == "json_invalid" for e in errors) else "invalid"


def _summary(exc: ValidationError, limit: int = 3) -> str:
    """The first ``limit`` errors, each location part and message cut short: a location can
    hold a hostile key of any length, and this text is logged and redacted."""
    parts = [
        f"{'.'.join(str(p)[:64] for p in e['loc'][:8]) or '<root>'}: {e['msg'][:200]}"
        for e in exc.errors(include_url=False, include_input=False)[:limit]
    ]
    more = exc.error_count() - limit
    return ("; ".join(parts) + (f" (+{more} more)" if more > 0 else ""))[:MAX_ERROR_TEXT]
