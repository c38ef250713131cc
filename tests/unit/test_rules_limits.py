"""The rules grammar's limits are the request's (docs/rules-grammar.md, "Limits"): any text a
UserRequest accepts either parses or is refused with the limit it broke, never with a
validation error of an inner model."""

from __future__ import annotations

import pytest

from agents.rules import RulesProvider, UnrecognizedRequest
from protocols.core import MAX_REQUEST_TEXT, UserRequest
from protocols.pipeline import MAX_STEPS


def test_a_clause_as_long_as_the_longest_request_parses() -> None:
    text = "read " + "a" * (MAX_REQUEST_TEXT - len("read "))
    UserRequest(text=text)  # the envelope's limit
    (action,) = RulesProvider().parse_intent(text).actions
    assert action.action == "read_file" and len(action.target) == MAX_REQUEST_TEXT - 5


def test_more_clauses_than_steps_are_refused_with_the_limit() -> None:
    provider = RulesProvider()
    assert len(provider.parse_intent(" and ".join(["run date"] * MAX_STEPS)).actions) == MAX_STEPS
    with pytest.raises(UnrecognizedRequest, match=f"{MAX_STEPS + 1} clauses; the limit is 16"):
        provider.parse_intent(" and ".join(["run date"] * (MAX_STEPS + 1)))


def test_text_over_the_request_limit_is_refused_with_the_limit() -> None:
    with pytest.raises(UnrecognizedRequest, match="the limit is 16,000"):
        RulesProvider().parse_intent("read " + "a" * MAX_REQUEST_TEXT)
