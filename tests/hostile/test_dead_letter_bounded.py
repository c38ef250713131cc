"""What a dead letter keeps of a hostile entry is bounded whatever the entry: counts, the
envelope's SHA-256 and 1 KiB prefixes of a bounded number of fields; a decoded envelope is
kept whole (for replay). Redaction sees only that account, never the entry."""

from __future__ import annotations

import hashlib
from typing import Any

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.errors import AgentRuntimeError
from agent_runtime.limits import DEAD_LETTER_HEAD_BYTES, DEAD_LETTER_MAX_FIELDS
from agent_runtime.observability.deadletters import Letter, replay
from agent_runtime.observability.redaction import Redactor, redact_dead_letter
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.original import describe_original
from agent_runtime.transport.streams import (
    Commit,
    DeadLetter,
    Entry,
    StreamBus,
    _dead_fields,
    original_fields,
)

MiB = 1024 * 1024
field_names = st.binary(max_size=80) | st.sampled_from([b"m", b"s", b"orig.m", b"reason"])
entries = st.dictionaries(field_names, st.binary(max_size=3000), max_size=20)
sizes = st.integers(0, 8 * MiB)


def assert_bounded(kept: dict[bytes, bytes], fields: dict[bytes, bytes], whole: bool) -> None:
    assert len(kept) <= 3 + 2 + DEAD_LETTER_MAX_FIELDS  # counts, sha, m, s, others
    for name, value in kept.items():
        assert len(name) <= len(b"orig_head.") + 64
        whole_envelope = whole and name in (b"orig.m", b"orig.s")
        assert len(value) <= DEAD_LETTER_HEAD_BYTES or whole_envelope
    assert int(kept[b"orig_fields"]) == len(fields)
    assert int(kept[b"orig_size"]) == sum(len(k) + len(v) for k, v in fields.items())


@given(entries, st.booleans())
def test_any_entry_is_described_within_bounds(fields: dict[bytes, bytes], whole: bool) -> None:
    kept = describe_original(fields, whole=whole)
    assert_bounded(kept, fields, whole)
    for name, value in original_fields(kept).items():
        assert fields[name] == value  # what is kept under orig.NAME is the whole value


@given(sizes, st.sampled_from([b"x", b"[", b"\xff"]), st.booleans())
def test_a_huge_envelope_keeps_size_hash_and_prefix(size: int, fill: bytes, whole: bool) -> None:
    fields = {b"m": fill * size, b"extra": b"y" * 5000}
    kept = describe_original(fields, whole=whole)
    assert_bounded(kept, fields, whole)
    if size <= DEAD_LETTER_HEAD_BYTES or whole:
        assert kept[b"orig.m"] == fields[b"m"]
    else:
        assert kept[b"orig_head.m"] == fields[b"m"][:DEAD_LETTER_HEAD_BYTES]
        assert kept[b"orig_sha256"] == hashlib.sha256(fields[b"m"]).hexdigest().encode()
    assert kept[b"orig_head.extra"] == b"y" * DEAD_LETTER_HEAD_BYTES


def test_thousands_of_fields_keep_the_envelope_and_a_few_others() -> None:
    fields = {b"f%05d" % i: b"v" for i in range(20_000)}
    fields[b"m"] = b"{}"  # the last field of the entry
    kept = describe_original(fields, whole=False)
    assert kept[b"orig.m"] == b"{}"
    assert len(original_fields(kept)) == 1 + DEAD_LETTER_MAX_FIELDS
    assert kept[b"orig_fields"] == b"20001"


def test_redaction_reads_the_bounded_account_not_the_entry(monkeypatch: Any) -> None:
    seen: list[dict[bytes, bytes]] = []
    real = Redactor.entry_fields

    def spy(self: Redactor, fields: dict[bytes, bytes]) -> Any:
        seen.append(fields)
        return real(self, fields)

    monkeypatch.setattr(Redactor, "entry_fields", spy)
    secret = b'{"api_key":"sk-' + b"a" * 30 + b'"}'
    entry = Entry("p:inbox:a", b"1-0", {b"m": secret + b" " * (4 * MiB)})
    letter = redact_dead_letter(DeadLetter(entry, "p:dlq:a", "oversize", "big"), Redactor())
    [account] = seen
    assert sum(map(len, account.values())) < 2 * DEAD_LETTER_HEAD_BYTES
    assert b"sk-aaaa" not in letter.original[b"orig_head.m"]
    assert letter.extra["redacted"] == "1" and letter.entry is entry


@pytest.mark.anyio
async def test_the_committed_dead_letter_of_a_4_mib_entry_is_small() -> None:
    redis = fakeredis.FakeAsyncRedis()
    bus = StreamBus(redis, group="a", consumer="a-0", atomic=False)  # fakeredis: no Lua
    await bus.ensure_group("p:inbox:a")
    await redis.xadd("p:inbox:a", {b"m": b"[" * (4 * MiB)})
    [entry] = await bus.read_new(["p:inbox:a"], count=1, block_ms=1)
    commit = Commit(dead=[DeadLetter(entry, "p:dlq:a", "oversize", "too big")])
    await bus.commit(commit)
    [(_id, fields)] = await redis.xrange("p:dlq:a")
    assert sum(len(k) + len(v) for k, v in fields.items()) < 2 * DEAD_LETTER_HEAD_BYTES
    assert fields[b"orig_size"] == str(4 * MiB + 1).encode()
    assert (await redis.xpending("p:inbox:a", "a"))["pending"] == 0
    await redis.aclose()


@pytest.mark.anyio
async def test_dlq_tools_show_the_prefix_and_refuse_to_replay_it() -> None:
    big = b'{"message_id": "x", "deep": ' + b"[" * (4 * MiB) + b"}"
    entry = Entry(Keys("ar").inbox("planner"), b"7-0", {b"m": big})
    fields = _dead_fields(DeadLetter(entry, "ar:dlq:planner", "oversize", "big"), "c-0")
    letter = Letter("ar:dlq:planner", "8-0", "planner", fields)
    shown = letter.detail()
    assert shown["original"] == {}
    assert shown["original_heads"] == {"m": big[:DEAD_LETTER_HEAD_BYTES].decode()}
    assert shown["original_size"] == len(big) + 1
    assert shown["original_sha256"] == hashlib.sha256(big).hexdigest()
    with pytest.raises(AgentRuntimeError, match="only a prefix of it was kept"):
        await replay(DeadLetterStore(fakeredis.FakeAsyncRedis(), Keys("ar")), letter)
