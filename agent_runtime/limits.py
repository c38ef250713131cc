"""Bounds on what the runtime reads from outside: JSON nesting depth, and how much of a rejected
stream entry a dead letter keeps. One place, so every reader applies the same numbers.

:func:`too_deep` runs before any JSON decoding of bytes the runtime did not just write itself
(the codec, the redactor, trace records, the dead-letter tools): a document nested deeper than
:data:`MAX_DEPTH` is refused as undecodable instead of recursing in a parser (Python's ``json``
raises ``RecursionError`` near depth 1000; pydantic-core stops near 200). The scan is linear
and all in C-level bytes operations (see the function); a document with at most
:data:`MAX_DEPTH` brackets is let through after two ``bytes.count`` calls.
"""

from __future__ import annotations

import re
from itertools import accumulate, repeat
from operator import add, mul, sub

#: Deepest JSON nesting (objects and arrays) any decoder in the runtime accepts. A pipeline
#: envelope uses about 6 levels (envelope, payload, plan, steps, step, args).
MAX_DEPTH = 64
#: Bytes of each original field a dead letter keeps when it does not keep the field whole.
DEAD_LETTER_HEAD_BYTES = 1024
#: Fields of the original entry described in a dead letter (in entry order); more are counted.
DEAD_LETTER_MAX_FIELDS = 8
#: Bytes of a field *name* kept in a dead letter's ``orig_head.NAME`` field.
DEAD_LETTER_NAME_BYTES = 64
#: Characters of an error text kept (logged, redacted, written) for a dead letter.
MAX_ERROR_TEXT = 4096

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a JSON escape: backslash and the byte after it
_OPEN = b"["
# '{' -> '[', '}' -> ']'; every byte that is not a bracket or a quote is deleted by translate().
_FOLD = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def too_deep(data: bytes, cap: int = MAX_DEPTH) -> bool:
    """True when the JSON text ``data`` may nest objects/arrays deeper than ``cap``.

    Exact for valid JSON. For any other bytes, False still means no parser reading them left
    to right gets deeper than ``cap`` before it stops at the first error (the text is
    undecodable either way). Linear, and all in C-level bytes operations: escapes are
    dropped, the text is reduced to brackets and quotes, and strings are skipped (every
    second piece between quotes is string contents). A run of more than ``cap`` openers
    answers at once; else while a round of ``bytes.replace(b"[]", b"")`` removes at least a
    quarter of them it goes on (each round lowers the depth by exactly one, so the run to
    look for shrinks by one, and the rounds' cost is a geometric series); then the depth of
    what remains is read off its runs (:func:`_peak`).
    """
    if data.count(b"[") + data.count(b"{") <= cap:
        return False
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    brackets = data.translate(_FOLD, _NOT_STRUCTURE)
    if b'"' in brackets:
        # Dropping two adjacent quotes keeps every other byte's inside/outside-a-string parity:
        # strings without brackets vanish in C, only the rest is split.
        brackets = brackets.replace(b'""', b"")
        if b'"' in brackets:
            brackets = b"".join(brackets.split(b'"')[::2])
    rounds = 0
    while brackets.count(_OPEN) + rounds > cap:
        if _OPEN * (cap + 1 - rounds) in brackets:  # that many unclosed: too deep at once
            return True
        shorter = brackets.replace(b"[]", b"")
        rounds += 1
        if not shorter:
            return rounds > cap
        if len(shorter) * 4 > len(brackets) * 3:  # few innermost pairs: few runs to read
            return _peak(shorter) + rounds > cap
        brackets = shorter
    return False


def _peak(brackets: bytes) -> int:
    """The deepest nesting of a text of brackets (``[`` opens, ``]`` closes). Between its
    ``][`` boundaries the text is pieces of openers then closers; with the boundary's ``[``
    counted in the next piece and its ``]`` in the previous one, piece i peaks at (the sum of
    ``2 * opens - length`` over the pieces before it) + its own opens. C-level iteration only."""
    pieces = brackets.split(b"][")
    opens = list(map(bytes.count, pieces, repeat(_OPEN)))
    nets = map(sub, map(mul, opens, repeat(2)), map(len, pieces))
    peak: int = max(map(add, accumulate(nets, initial=0), opens))
    return peak


def depth_error(cap: int = MAX_DEPTH) -> str:
    """The human text of a depth refusal."""
    return f"JSON nested deeper than {cap} levels"
