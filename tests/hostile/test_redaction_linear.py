"""Every pattern of the redactor runs in linear time on any text: 1 MiB runs of every
character class the patterns care about (alone, and after each pattern's opening), through
each pattern and the whole redactor. A pattern with nested or overlapping unbounded
quantifiers would not finish (pytest-timeout ends the test); the assertions are on what the
redactor returns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.observability import redaction
from agent_runtime.observability.redaction import (
    ENV_NAME,
    MASK,
    Redactor,
    is_secret_name,
    url_password,
)

MiB = 1024 * 1024
PATTERNS = [value for value in vars(redaction).values() if isinstance(value, re.Pattern)]
# Letters, digits, whitespace, every punctuation mark the patterns name, other bytes; then
# pairs and words that start a pattern over and over.
RUNS = [
    "a", "7", " ", "\n", ":", "/", "@", "=", "-", "_", ".", "+", "~", "?", "&", "#", '"',
    "'", ",", "}", "\\", "é", "\x00",
    "a1", "a:", ":a", "a://", "://a:", "-sk", "sk-", "x@",
    "password", "password=", '"password": ', "Bearer ", "?token=",
]  # fmt: skip
# The start of each pattern's match, then a run of what its next quantifier consumes.
OPENINGS = [
    ("redis://", "a"), ("redis://", ":"), ("redis://user:", "a"), ("redis://user:", ":"),
    ("sk-", "a"), ("sk-", "-"), ("Bearer ", " "), ("Bearer ", "a"), ("password", " "),
    ("password=", " "), ("password=", "a"), ("?token=", "a"), ("'password'", "'"),
]  # fmt: skip


def test_every_pattern_of_the_module_is_covered() -> None:
    assert len(PATTERNS) >= 7  # ENV_NAME, SECRET_NAME, URL, query, bearer, key=value, key shape


@pytest.mark.parametrize("run", RUNS)
def test_one_mebibyte_runs_of_every_character_class(run: str) -> None:
    body = run * (MiB // len(run))
    out = Redactor(("s3cret-value",)).text(body)  # the text patterns
    assert out == body or (MASK in out and len(out) < len(body))
    assert url_password(body) is None
    assert not is_secret_name(body)  # the name patterns
    names = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
    assert bool(ENV_NAME.search(body)) == any(name in body.upper() for name in names)


@pytest.mark.parametrize(("opening", "run"), OPENINGS)
def test_one_mebibyte_runs_after_each_patterns_opening(opening: str, run: str) -> None:
    text = opening + run * MiB
    for pattern in PATTERNS:
        pattern.search(text)
    out = Redactor().text(text)
    assert out == text or (MASK in out and len(out) < len(text))


def test_secrets_at_the_end_of_long_runs_are_still_masked() -> None:
    pad = "a" * MiB
    out = Redactor().text(pad + " redis://user:hunter22@db " + pad + " password=hunter33")
    assert "hunter22" not in out and "hunter33" not in out
    assert "redis://user:***@db" in out and out.startswith(pad)
    assert Redactor().text("x" * 40 + "redis://:pw123456@h") == "x" * 40 + "redis://:***@h"


@given(st.text(max_size=300), st.text(min_size=6, max_size=20).filter(lambda s: s.strip()))
def test_known_secrets_never_survive(text: str, secret: str) -> None:
    out = Redactor((secret,)).text(text + secret + text)
    assert secret not in out or secret in MASK


@given(st.binary(max_size=400))
def test_bytes_of_any_kind_never_raise(data: bytes) -> None:
    out, changed = Redactor().json_bytes(data)
    assert isinstance(out, bytes) and (changed or out == data)
