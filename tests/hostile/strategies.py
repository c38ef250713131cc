"""Hypothesis strategies for hostile stream entries: what anyone who can XADD to an inbox can
write. Each strategy draws small choices (sizes, fill bytes, which field to break) and builds
the bytes in ``.map``, so multi-megabyte entries cost hypothesis a handful of choices.

An entry is ``(label, fields)``: ``label`` names the kind of hostility (for failure messages),
``fields`` is what goes to XADD.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from agent_runtime.limits import MAX_DEPTH
from agent_runtime.transport.keys import Keys

Fields = dict[bytes, bytes]
Entry = tuple[str, Fields]
MiB = 1024 * 1024
NOW = datetime.now(UTC)
#: Allow-listed in the hostile pipeline's ``reply_streams``: naming it is accepted.
ALLOWED_REPLY = "hostile-allowed-replies"

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def envelope(
    agent: str,
    keys: Keys,
    *,
    cid: uuid.UUID,
    mid: uuid.UUID,
    text: str = "count words in data/notes.txt",
    **overrides: Any,
) -> dict[str, Any]:
    """A valid ``user.request`` envelope (as a dict) addressed to ``agent``."""
    data: dict[str, Any] = {
        "message_id": str(mid),
        "correlation_id": str(cid),
        "from_agent": "client",
        "to_agent": agent,
        "message_type": "user.request",
        "schema_version": 1,
        "payload": {"text": text},
        "timestamp": NOW.isoformat(),
        "reply_to": keys.reply(str(cid)),
    }
    data.update(overrides)
    return data


def as_entry(label: str, data: Any, **extra: bytes) -> Entry:
    return label, {b"m": json.dumps(data).encode(), **{k.encode(): v for k, v in extra.items()}}


def nested(depth: int, kind: str) -> str:
    """JSON text nested ``depth`` levels deep (arrays, objects, or both; strings holding
    brackets and escaped quotes along the way, which must not count)."""
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + '"[[{\\""' + "}" * depth
    return '[{"b":' * (depth // 2) + ("[1]" if depth % 2 else "1") + "}]" * (depth // 2)


def _ids() -> st.SearchStrategy[tuple[uuid.UUID, uuid.UUID]]:
    return st.tuples(st.uuids(), st.uuids())


def raw_bytes() -> st.SearchStrategy[Entry]:
    return st.binary(max_size=200).map(lambda b: ("raw bytes", {b"m": b}))


def invalid_utf8(agent: str, keys: Keys) -> st.SearchStrategy[Entry]:
    def build(ids: tuple[uuid.UUID, uuid.UUID], junk: bytes) -> Entry:
        text = json.dumps(envelope(agent, keys, cid=ids[0], mid=ids[1])).encode()
        cut = len(text) // 2
        return "invalid utf-8", {b"m": text[:cut] + b"\xff\xfe" + junk + text[cut:]}

    return st.builds(build, _ids(), st.binary(max_size=8))


def random_fields() -> st.SearchStrategy[Entry]:
    fields = st.dictionaries(st.binary(max_size=12), st.binary(max_size=64), min_size=1, max_size=6)
    return fields.map(lambda f: ("random fields", f))


def deep(agent: str, keys: Keys) -> st.SearchStrategy[Entry]:
    """Nesting inside the payload: the envelope and payload add two levels."""
    depths = st.sampled_from(
        [MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 1_000, 50_000]
    )

    def build(ids: tuple[uuid.UUID, uuid.UUID], depth: int, kind: str) -> Entry:
        data = envelope(agent, keys, cid=ids[0], mid=ids[1], payload={"text": "x", "metadata": 0})
        text = json.dumps(data).replace(
            '"metadata": 0', f'"metadata": {{"deep": {nested(depth, kind)}}}'
        )
        return f"nested {depth} ({kind})", {b"m": text.encode()}

    return st.builds(build, _ids(), depths, st.sampled_from(["array", "object", "mixed"]))


_LIMITS: list[tuple[str, Any]] = [
    ("payload.text", "x" * 16_000),
    ("payload.text", "x" * 16_001),
    ("payload.text", ""),
    ("from_agent", "f" * 64),
    ("from_agent", "f" * 65),
    ("message_type", "a." + "b" * 126),
    ("message_type", "a." + "b" * 127),
    ("reply_to", ALLOWED_REPLY),
    ("reply_to", "r" * 513),
    ("hops", 64),
    ("hops", 65),
    ("hops", 1_000),
    ("hops", 1_001),
    ("hops", -1),
    ("schema_version", 0),
    ("schema_version", 10_000),
    ("schema_version", 10_001),
    ("budget_usd", -0.01),
    ("budget_usd", 0.0),
    ("budget_usd", 1e308),
    ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
    ("traceparent", "00-" + "a" * 33 + "-" + "b" * 16 + "-01"),
]


def model_limits(agent: str, keys: Keys) -> st.SearchStrategy[Entry]:
    def build(ids: tuple[uuid.UUID, uuid.UUID], limit: tuple[str, Any]) -> Entry:
        name, value = limit
        data = envelope(agent, keys, cid=ids[0], mid=ids[1])
        if name.startswith("payload."):
            data["payload"] = {"text": value}
        else:
            data[name] = value
        return as_entry(f"limit {name}={str(value)[:20]}", data)

    return st.builds(build, _ids(), st.sampled_from(_LIMITS))


def many_fields(agent: str, keys: Keys) -> st.SearchStrategy[Entry]:
    def build(ids: tuple[uuid.UUID, uuid.UUID], count: int, with_envelope: bool) -> Entry:
        fields = {b"f%05d" % i: b"v" * (i % 7) for i in range(count)}
        if with_envelope:
            fields[b"m"] = json.dumps(envelope(agent, keys, cid=ids[0], mid=ids[1])).encode()
        return f"{count} fields", fields

    return st.builds(build, _ids(), st.sampled_from([1_000, 5_000]), st.booleans())


def huge(agent: str, keys: Keys, cap: int) -> st.SearchStrategy[Entry]:
    """An envelope padded (payload metadata) to exactly ``size`` bytes, around the size cap
    and far past it; or a valid envelope beside a huge extra field."""
    sizes = st.sampled_from([cap - 1, cap, cap + 1, 4 * MiB])

    def build(ids: tuple[uuid.UUID, uuid.UUID], size: int, fill: str, beside: bool) -> Entry:
        data = envelope(agent, keys, cid=ids[0], mid=ids[1])
        if beside:
            return as_entry(f"valid m + {size}-byte field", data, pad=fill.encode() * size)
        data["payload"] = {"text": "x", "metadata": {"pad": ""}}
        pad = size - len(json.dumps(data).encode())
        data["payload"]["metadata"]["pad"] = fill * max(pad, 0)
        return as_entry(f"envelope of {size} bytes", data)

    return st.builds(build, _ids(), sizes, st.sampled_from(["x", "[", "{", "a"]), st.booleans())


_FIELDS = [
    "message_id",
    "correlation_id",
    "causation_id",
    "from_agent",
    "to_agent",
    "message_type",
    "schema_version",
    "payload",
    "timestamp",
    "deadline",
    "hops",
    "reply_to",
    "traceparent",
    "budget_usd",
]


def wrong_types(agent: str, keys: Keys) -> st.SearchStrategy[Entry]:
    def build(ids: tuple[uuid.UUID, uuid.UUID], name: str, value: Any, drop: bool) -> Entry:
        data = envelope(agent, keys, cid=ids[0], mid=ids[1])
        if drop:
            data.pop(name, None)
        else:
            data[name] = value
        return as_entry(f"{'no' if drop else 'wrong'} {name}", data)

    return st.builds(build, _ids(), st.sampled_from(_FIELDS), json_values, st.booleans())


def unknown_versions(agent: str, keys: Keys, message_types: list[str]) -> st.SearchStrategy[Entry]:
    def build(ids: tuple[uuid.UUID, uuid.UUID], kind: str, version: int, body: Any) -> Entry:
        payload = body if isinstance(body, dict) else {"text": "x"}
        data = envelope(agent, keys, cid=ids[0], mid=ids[1], message_type=kind)
        data.update(schema_version=version, payload=payload)
        return as_entry(f"{kind} v{version}", data)

    kinds = st.sampled_from([*message_types, "no.such_type"])
    versions = st.sampled_from([1, 2, 3, 7, 9_999])
    return st.builds(build, _ids(), kinds, versions, json_values)


def edge_values(agent: str, keys: Keys, agents: list[str]) -> st.SearchStrategy[Entry]:
    """``reply_to`` / ``to_agent`` / ``deadline`` / ``timestamp`` edge values."""

    def reply_tos(cid: uuid.UUID, other: uuid.UUID) -> list[Any]:
        return [
            keys.reply(str(other)),
            keys.reply(str(cid)).upper(),
            keys.reply(str(cid)) + " ",
            keys.inbox(agent),
            keys.dlq(agent),
            keys.inbox(agents[0]),
            keys.reports(),
            "",
            None,
            ALLOWED_REPLY,
        ]

    times = [
        (NOW - timedelta(days=1)).isoformat(),
        (NOW + timedelta(days=3650)).isoformat(),
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+14:00",
        "yesterday",
        1_700_000_000,
    ]

    def build(ids: tuple[uuid.UUID, uuid.UUID], other: uuid.UUID, pick: int, which: str) -> Entry:
        data = envelope(agent, keys, cid=ids[0], mid=ids[1])
        choices: dict[str, list[Any]] = {
            "reply_to": reply_tos(ids[0], other),
            "to_agent": [*agents, "", "A", "a" * 63, "a" * 64, agent + "-x", "client"],
            "deadline": times,
            "timestamp": times,
        }
        values = choices[which]
        data[which] = values[pick % len(values)]
        return as_entry(f"{which}={str(data[which])[:40]}", data)

    names = st.sampled_from(["reply_to", "to_agent", "deadline", "timestamp"])
    return st.builds(build, _ids(), st.uuids(), st.integers(0, 63), names)


def hostile_entries(
    agent: str, keys: Keys, *, cap: int, agents: list[str], message_types: list[str]
) -> st.SearchStrategy[Entry]:
    """Any kind of hostile entry for ``agent``'s inbox."""
    return st.one_of(
        raw_bytes(),
        invalid_utf8(agent, keys),
        random_fields(),
        deep(agent, keys),
        model_limits(agent, keys),
        many_fields(agent, keys),
        huge(agent, keys, cap),
        wrong_types(agent, keys),
        unknown_versions(agent, keys, message_types),
        edge_values(agent, keys, agents),
    )
