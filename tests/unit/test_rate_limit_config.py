"""The pipeline's ``llm:`` block (accounts and their fleet rate limits, config/limits.py) and
an agent's ``llm.account``, as ``validate`` checks them: each problem on its own
``FILE:LINE: dotted.key: message`` line, and hostile YAML in the block (hypothesis) always a
list of problems, never an exception; a block is accepted exactly when its model accepts it.

Examples per test: ``AGENT_RUNTIME_HYPOTHESIS_EXAMPLES`` (default 200)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_runtime.config.limits import LLMFleet
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.validation import problems

EXAMPLES = int(os.environ.get("AGENT_RUNTIME_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def pipeline_text(llm: Any, account: str | None = None, provider: str = "openai") -> str:
    block: dict[str, Any] = {"provider": provider}
    if account is not None:
        block["account"] = account
    doc = {
        "allowed_modules": ["tests.fixtures"],
        "llm": llm,
        "agents": {
            "caller": {
                "class": "tests.fixtures.llm_caller:LLMCaller",
                "config": {"state_dir": ".", "llm": block},
            }
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def check(text: str) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "pipeline.yaml")
        path.write_text(text)
        found = problems(path, environment_for=(), environ={})
    assert isinstance(found, list) and all(isinstance(p, str) for p in found)
    return found


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_valid_block_loads_and_names_its_limits(tmp_path: Path) -> None:
    llm = {"accounts": {"openai-main": {"provider": "openai", "requests_per_minute": 500}}}
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text(llm, account="openai-main"))
    assert check(path.read_text()) == []
    config = Pipeline.load(path).config
    account = config.llm.accounts["openai-main"]
    assert account.meters() == [("requests", 500)]
    assert account.window_seconds == 60.0  # the provider's minute unless shortened


def test_bad_values_are_reported_on_their_line() -> None:
    llm = {
        "accounts": {
            "main": {"provider": "openai", "requests_per_minute": 0, "tokens_per_minte": 5},
            "empty": {"provider": "anthropic"},
            "bad name{x}": {"provider": "openai", "requests_per_minute": 1},
        }
    }
    text = pipeline_text(llm)
    found = check(text)
    joined = "\n".join(found)
    assert (
        f":{line_of(text, 'requests_per_minute: 0')}: llm.accounts.main.requests_per_minute"
        in joined
    )
    assert (
        f":{line_of(text, 'tokens_per_minte')}: llm.accounts.main.tokens_per_minte: unknown key"
        in joined
    )
    assert (
        "llm.accounts.empty: Value error, set requests_per_minute, tokens_per_minute or both"
        in joined
    )
    assert "llm.accounts.bad name{x}.[key]: String should match pattern" in joined


def test_an_agent_naming_an_unknown_account_is_reported_on_its_line() -> None:
    llm = {"accounts": {"openai-main": {"provider": "openai", "requests_per_minute": 5}}}
    text = pipeline_text(llm, account="openai-other")
    (problem,) = check(text)
    assert problem.split(":", 2)[1] == str(line_of(text, "account: openai-other"))
    assert "agents.caller.config.llm.account: 'openai-other' is not an account" in problem
    assert "known: openai-main" in problem


def test_an_agent_using_another_providers_account_is_reported() -> None:
    llm = {"accounts": {"anthropic": {"provider": "anthropic", "requests_per_minute": 5}}}
    (problem,) = check(pipeline_text(llm, account="anthropic"))
    assert "account 'anthropic' is a anthropic account; this agent's provider is openai" in problem
    # by default an agent uses the account named after its provider, if there is one
    default = {"accounts": {"openai": {"provider": "anthropic", "requests_per_minute": 5}}}
    (problem,) = check(pipeline_text(default))
    assert "account 'openai' is a anthropic account" in problem


KEYS = st.sampled_from(
    [
        "accounts",
        "provider",
        "requests_per_minute",
        "tokens_per_minute",
        "window_seconds",
        "lease_seconds",
        "openai",
        "main",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["openai", "anthropic", "60", "1e9", "{x}", "-1"]),
)
BLOCKS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


@SETTINGS
@given(BLOCKS)
def test_any_llm_block_is_accepted_exactly_when_valid_else_located(block: Any) -> None:
    text = pipeline_text(block)
    found = check(text)
    try:
        fleet = LLMFleet.model_validate(block)
    except ValidationError:
        fleet = None
    llm_problems = [p for p in found if re.search(r":\d+: llm(\.|:)", p)]
    if fleet is None:
        assert llm_problems, found  # refused, with the file and line of the block
    else:
        assert not llm_problems
        found_account = fleet.accounts.get("openai")
        if found_account is None or found_account.provider == "openai":
            assert found == []


@SETTINGS
@given(
    st.integers(1, 10_000_000),
    st.one_of(st.none(), st.integers(1, 1_000_000_000)),
    st.floats(0.1, 3600),
)
def test_any_valid_limits_load_with_their_values(rpm: int, tpm: int | None, window: float) -> None:
    account = {"provider": "openai", "requests_per_minute": rpm, "window_seconds": window}
    if tpm is not None:
        account["tokens_per_minute"] = tpm
    assert check(pipeline_text({"accounts": {"main": account}}, account="main")) == []
    fleet = LLMFleet.model_validate({"accounts": {"main": account}})
    meters = dict(fleet.accounts["main"].meters())
    assert meters["requests"] == rpm and meters.get("tokens") == tpm


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_in_the_llm_block_give_a_list_of_problems(raw: bytes) -> None:
    head = b"allowed_modules: [tests.fixtures]\nllm:\n  accounts:\n    main: "
    tail = b"\nagents:\n  caller:\n    class: tests.fixtures.llm_caller:LLMCaller\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "pipeline.yaml")
        path.write_bytes(head + raw + tail)
        found = problems(path, environment_for=(), environ={})
    assert found and all(isinstance(p, str) for p in found)  # the agent's config is incomplete


def test_an_agent_types_rate_limit_is_checked_on_its_line() -> None:
    doc = yaml.safe_load(pipeline_text({}))
    doc["agents"]["caller"]["rate_limit"] = {"messages_per_second": 0, "burst": 2}
    text = yaml.safe_dump(doc, sort_keys=False)
    found = "\n".join(check(text))
    line = line_of(text, "messages_per_second: 0")
    assert f":{line}: agents.caller.rate_limit.messages_per_second: Input should be" in found
    assert f":{line_of(text, 'burst: 2')}: agents.caller.rate_limit.burst: unknown key" in found
    doc["agents"]["caller"]["rate_limit"] = {"messages_per_second": 20}
    assert check(yaml.safe_dump(doc)) == []


def test_status_text_shows_each_limit_with_its_use_and_waits() -> None:
    from agent_runtime.observability.status import render_status

    status = {
        "prefix": "ar",
        "streams": [],
        "dead_letters": [],
        "breakers": {},
        "workers": [],
        "rate_limits": [
            {
                "limit": "openai-main",
                "provider": "openai",
                "window_s": 60.0,
                "meters": {
                    "requests": {"used": 500, "calls": 500, "limit": 500},
                    "tokens": {"used": 181234, "calls": 500, "limit": 200000},
                },
                "waited": 4,
                "wait_s_total": 30.0,
                "refused_deadline": 2,
                "refused_too_large": 1,
            },
            {
                "limit": "agent.executor",
                "provider": "-",
                "window_s": 1.0,
                "meters": {"messages": {"used": 3, "calls": 3, "limit": 20}},
                "waited": 0,
                "wait_s_total": 0.0,
                "refused_deadline": 0,
                "refused_too_large": 0,
            },
        ],
    }
    text = render_status(status)
    section = text.split("Rate limits\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section[0].split() == [
        "LIMIT",
        "PROVIDER",
        "REQUESTS",
        "TOKENS",
        "WINDOW",
        "WAITED",
        "AVG",
        "WAIT",
        "REFUSED",
    ]
    assert section[1].split() == [
        "openai-main",
        "openai",
        "500/500",
        "181234/200000",
        "1m00s",
        "4",
        "7.5s",
        "3",
    ]
    assert section[2].split() == ["agent.executor", "-", "3/20", "-", "1.0s", "0", "-", "0"]
