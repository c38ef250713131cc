"""What a dead letter keeps of the stream entry it replaces: bounded whatever the entry.

A rejected entry may be megabytes long, nested thousands deep or have thousands of fields; its
dead letter keeps counts, the envelope's SHA-256 and bounded prefixes, so writing (and
redacting) it costs time independent of the entry's size beyond that one hash. A decoded
envelope (already size- and depth-capped by the codec) is kept whole, for replay.
"""

from __future__ import annotations

import hashlib
from itertools import islice

from agent_runtime.limits import (
    DEAD_LETTER_HEAD_BYTES,
    DEAD_LETTER_MAX_FIELDS,
    DEAD_LETTER_NAME_BYTES,
)

Fields = dict[bytes, bytes]
_ENVELOPE_FIELDS = (b"m", b"s")  # codec.FIELD_MESSAGE, codec.FIELD_SIGNATURE
WHOLE_PREFIX = b"orig."
HEAD_PREFIX = b"orig_head."


def describe_original(fields: Fields, *, whole: bool) -> Fields:
    """The dead letter's account of ``fields``:

    * ``orig_fields`` (how many) and ``orig_size`` (bytes of names and values);
    * for ``m`` and ``s`` when present, then the first :data:`DEAD_LETTER_MAX_FIELDS` other
      fields: ``orig.NAME`` = the value whole when ``whole`` (``m``/``s`` of a decoded
      envelope) or when it is at most :data:`DEAD_LETTER_HEAD_BYTES` long, else
      ``orig_head.NAME`` = its first :data:`DEAD_LETTER_HEAD_BYTES` bytes (a name longer than
      :data:`DEAD_LETTER_NAME_BYTES` is cut, and its value always goes to ``orig_head.``);
    * ``orig_sha256``: SHA-256 (hex) of the ``m`` field when it is not kept whole.
    """
    out: Fields = {
        b"orig_fields": str(len(fields)).encode(),
        b"orig_size": str(sum(map(len, fields)) + sum(map(len, fields.values()))).encode(),
    }
    for name in _described(fields):
        value = fields[name]
        if len(name) <= DEAD_LETTER_NAME_BYTES and (
            len(value) <= DEAD_LETTER_HEAD_BYTES or (whole and name in _ENVELOPE_FIELDS)
        ):
            out[WHOLE_PREFIX + name] = value
            continue
        out[HEAD_PREFIX + name[:DEAD_LETTER_NAME_BYTES]] = value[:DEAD_LETTER_HEAD_BYTES]
        if name == _ENVELOPE_FIELDS[0]:
            out[b"orig_sha256"] = hashlib.sha256(value).hexdigest().encode()
    return out


def _described(fields: Fields) -> list[bytes]:
    """``m`` and ``s`` when present, then the first other names up to the field limit; looks
    at no more than ``DEAD_LETTER_MAX_FIELDS + 2`` names of the entry."""
    names = [name for name in _ENVELOPE_FIELDS if name in fields]
    others = [n for n in islice(fields, DEAD_LETTER_MAX_FIELDS + 2) if n not in _ENVELOPE_FIELDS]
    return names + others[:DEAD_LETTER_MAX_FIELDS]
