"""Codec.decode on hostile entries: it raises nothing but DecodeError, it hands the JSON parser
only input within the size and depth caps, and ``reply_to`` names only the request's own reply
stream or an allow-listed one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime import codec as codec_module
from agent_runtime.codec import Codec
from agent_runtime.config.model import load_config
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import ConfigError, DecodeError
from agent_runtime.limits import too_deep
from agent_runtime.transport.keys import Keys
from tests.hostile.strategies import ALLOWED_REPLY, Entry, envelope, hostile_entries

STREAM = "ar:inbox:test"  # any stream: CODEC is unsigned

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = Pipeline.load(ROOT / "configs" / "default.yaml")
KEYS = PIPELINE.config.keys
CAP = 64 * 1024  # smaller than the default so huge entries stay cheap to generate
CODEC = Codec(PIPELINE.schemas, max_bytes=CAP, keys=KEYS, reply_streams=[ALLOWED_REPLY])
AGENTS = list(PIPELINE.agents)
ENTRIES = st.sampled_from(AGENTS).flatmap(
    lambda agent: hostile_entries(
        agent, KEYS, cap=CAP, agents=AGENTS, message_types=PIPELINE.schemas.message_types()
    )
)


@pytest.fixture
def parser_inputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every byte string the codec hands to the JSON parser."""
    seen: list[bytes] = []
    real = codec_module._validate_envelope

    def spy(data: bytes) -> Any:
        seen.append(data)
        return real(data)

    monkeypatch.setattr(codec_module, "_validate_envelope", spy)
    yield seen


# too_slow: a health check on generation speed, which a loaded machine fails, not the codec
@settings(
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ENTRIES)
def test_decode_raises_only_decode_error_and_parses_only_bounded_input(
    parser_inputs: list[bytes], entry: Entry
) -> None:
    label, fields = entry
    parser_inputs.clear()
    try:
        CODEC.decode(fields, STREAM)
    except DecodeError as exc:
        assert exc.reason in {
            "oversize",
            "undecodable",
            "invalid",
            "unknown_type",
            "unknown_version",
        }, label
    for data in parser_inputs:
        assert len(data) <= CAP and not too_deep(data), label


@given(st.dictionaries(st.binary(max_size=8), st.binary(max_size=300), max_size=5))
def test_arbitrary_fields_raise_only_decode_error(fields: dict[bytes, bytes]) -> None:
    try:
        CODEC.decode(fields, STREAM)
    except DecodeError:
        pass


def encoded(**overrides: Any) -> dict[bytes, bytes]:
    cid = uuid.uuid4()
    data = envelope("intent_parser", KEYS, cid=cid, mid=uuid.uuid4(), **overrides)
    if "reply_to" not in overrides:
        data["reply_to"] = KEYS.reply(str(cid))
    return {b"m": json.dumps(data).encode()}


def test_nesting_past_the_cap_is_undecodable_before_parsing(parser_inputs: list[bytes]) -> None:
    deep = {b"m": b'{"payload":' + b"[" * 65 + b"]" * 65 + b"}"}
    with pytest.raises(DecodeError) as info:
        CODEC.decode(deep, STREAM)
    assert info.value.reason == "undecodable" and "deeper than 64" in info.value.detail
    assert parser_inputs == []


def test_reply_to_must_be_the_requests_own_reply_stream_or_allow_listed() -> None:
    cid = uuid.uuid4()
    own = envelope("intent_parser", KEYS, cid=cid, mid=uuid.uuid4())
    assert CODEC.decode({b"m": json.dumps(own).encode()}, STREAM).message.reply_to == KEYS.reply(
        str(cid)
    )
    allowed = {**own, "reply_to": ALLOWED_REPLY}
    assert (
        CODEC.decode({b"m": json.dumps(allowed).encode()}, STREAM).message.reply_to == ALLOWED_REPLY
    )
    no_reply = {**own, "reply_to": None}
    assert CODEC.decode({b"m": json.dumps(no_reply).encode()}, STREAM).message.reply_to is None
    for stream in (
        KEYS.reply(str(uuid.uuid4())),  # another request's replies
        KEYS.reply(str(cid)).upper(),
        KEYS.inbox("planner"),
        KEYS.dlq("intent_parser"),
        KEYS.reports(),
        Keys("other").reply(str(cid)),  # another pipeline's prefix
        "",
    ):
        with pytest.raises(DecodeError) as info:
            CODEC.decode({b"m": json.dumps({**own, "reply_to": stream}).encode()}, STREAM)
        assert info.value.reason == "invalid" and "reply_to" in info.value.detail


def test_a_codec_without_keys_uses_the_default_prefix() -> None:
    plain = Codec(PIPELINE.schemas)
    cid = uuid.uuid4()
    good = envelope("intent_parser", Keys(), cid=cid, mid=uuid.uuid4())
    assert (
        plain.decode({b"m": json.dumps(good).encode()}, STREAM).message.reply_to
        == f"ar:reply:{{{cid}}}"
    )
    with pytest.raises(DecodeError, match="reply_to"):
        plain.decode(encoded(reply_to=ALLOWED_REPLY), STREAM)


def _config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "pipeline.yaml"
    agents = {"echo": {"class": "tests.fixtures.agents:Echo"}}
    path.write_text(
        yaml.safe_dump({"allowed_modules": ["tests.fixtures"], "agents": agents, **extra})
    )
    return path


def test_reply_streams_config_is_checked(tmp_path: Path) -> None:
    ok = load_config(_config(tmp_path, reply_streams=["replies:partner"]))
    assert ok.reply_streams == ["replies:partner"]
    for bad in (["ar:inbox:echo"], ["ar:anything"], [""], ["x" * 513]):
        with pytest.raises(ConfigError, match="reply_streams"):
            load_config(_config(tmp_path, reply_streams=bad))
    with pytest.raises(ConfigError, match="reply_stream"):
        load_config(_config(tmp_path, reply_stream=["typo"]))
