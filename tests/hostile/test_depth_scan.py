"""limits.too_deep: the nesting check every JSON reader runs before parsing. Exact on valid
JSON (strings holding brackets and escaped quotes do not count); never raises on any bytes;
never lets through a text a parser would find deeper than the cap."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.limits import MAX_DEPTH, too_deep
from tests.hostile.strategies import nested

tricky_text = st.text(alphabet='[]{}"\\ab,:', max_size=8)
json_docs = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def parser_depth(data: bytes) -> int:
    """How deep a parser reading ``data`` left to right gets before it stops (at the end or at
    the first byte that cannot be JSON structure): the bound the check must respect."""
    level = peak = 0
    inside = escaped = False
    for byte in data:
        if inside:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                inside = False
        elif byte == 0x22:
            inside = True
        elif byte in b"[{":
            level += 1
            peak = max(peak, level)
        elif byte in b"]}":
            if level == 0:
                break  # a parser fails here
            level -= 1
        elif byte == 0x5C:
            break  # a backslash outside a string: not JSON
    return peak


@given(json_docs, st.integers(0, 12), st.booleans())
def test_exact_on_valid_json(doc: Any, cap: int, compact: bool) -> None:
    data = json.dumps(doc, separators=(",", ":") if compact else None).encode()
    assert too_deep(data, cap) == (depth(doc) > cap)


@given(st.binary(max_size=400) | st.text(alphabet='[]{}"\\ a', max_size=400).map(str.encode))
def test_any_bytes_never_raise_and_never_pass_deeper_text(data: bytes) -> None:
    for cap in (0, 1, 3, 8):
        if not too_deep(data, cap):
            assert parser_depth(data) <= cap


@given(st.sampled_from(["array", "object", "mixed"]), st.integers(-3, 3))
def test_at_and_past_the_cap(kind: str, offset: int) -> None:
    text = nested(MAX_DEPTH + offset, kind).encode()
    assert too_deep(text) == (offset > 0)
    assert depth(json.loads(text)) == MAX_DEPTH + offset  # the texts are what they claim


def test_brackets_inside_strings_never_count() -> None:
    inside = json.dumps({"text": "[" * 100_000 + '\\"{' * 1000}).encode()
    assert not too_deep(inside)
    beside = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH  # MAX_DEPTH + 1 levels with the object
    assert too_deep(b'{"a":"[[[[","b":' + beside + b"}")


def test_huge_inputs_are_answered() -> None:
    """The shapes that cost the most: one chain, many chains just under the cap, a staircase
    (each level opens two and closes one), and everything inside strings."""
    size = 4 * 1024 * 1024
    assert too_deep(b"[" * (size // 2) + b"]" * (size // 2))
    chain = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    assert not too_deep(b"[" + chain * (size // len(chain)) + b"]")
    assert too_deep(b"[[]" * (size // 3))
    assert not too_deep(b'["' + b"[" * size + b'"]')
