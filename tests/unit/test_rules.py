"""The offline rules provider: the documented grammar, deterministic, refuses the rest."""

from __future__ import annotations

import anyio
import pytest

from agents.rules import RulesProvider, UnrecognizedRequest, intent_prompt, split_request
from protocols.pipeline import ParsedIntent, PlanDraft


def plan_for(text: str) -> PlanDraft:
    provider = RulesProvider()
    return provider.draft_plan(intent_prompt(provider.parse_intent(text)))


def test_and_is_parallel_then_depends_on_the_whole_previous_group() -> None:
    plan = plan_for(
        "list files in configs and read configs/policy.yaml and run uptime "
        "then count words in configs/policy.yaml"
    )
    assert [(s.id, s.tool, s.depends_on) for s in plan.steps] == [
        ("s1", "file_list", []),
        ("s2", "file_read", []),
        ("s3", "shell", []),
        ("s4", "python", ["s1", "s2", "s3"]),
    ]
    assert plan.steps[0].args == {"path": "configs"}
    assert plan.steps[2].args == {"argv": ["uptime"]}
    assert plan.steps[3].args == {
        "function": "word_count",
        "kwargs": {"path": "configs/policy.yaml"},
    }


@pytest.mark.parametrize(
    ("text", "tool", "args"),
    [
        ("ls docs", "file_list", {"path": "docs"}),
        ("list the directory docs", "file_list", {"path": "docs"}),
        ("read the file README.md", "file_read", {"path": "README.md"}),
        ("show README.md", "file_read", {"path": "README.md"}),
        ("run uname -a", "shell", {"argv": ["uname", "-a"]}),
        ("execute df -h.", "shell", {"argv": ["df", "-h"]}),
        (
            "fetch https://example.com/a?b=c",
            "http",
            {"method": "GET", "url": "https://example.com/a?b=c"},
        ),
        ("deploy web", "deploy", {"service": "web", "environment": "staging", "version": "latest"}),
        (
            "Deploy api to prod version 1.2.3",
            "deploy",
            {"service": "api", "environment": "prod", "version": "1.2.3"},
        ),
        ("wc notes.txt", "python", {"function": "word_count", "kwargs": {"path": "notes.txt"}}),
    ],
)
def test_each_clause_form(text: str, tool: str, args: dict[str, object]) -> None:
    (step,) = plan_for(text).steps
    assert (step.tool, step.args) == (tool, args)


def test_separators_inside_quotes_are_text() -> None:
    (step,) = plan_for('run echo "salt and pepper, then more"').steps
    assert step.args == {"argv": ["echo", "salt and pepper, then more"]}


def test_comma_semicolon_and_then_forms() -> None:
    assert split_request("run date, run whoami; run uname -a and then read x") == [
        ["run date", "run whoami"],
        ["run uname -a"],
        ["read x"],
    ]


@pytest.mark.parametrize(
    "text", ["frobnicate the widgets", "get not-a-url", "deploy", "run 'unterminated", "   "]
)
def test_outside_the_grammar_is_refused(text: str) -> None:
    with pytest.raises(UnrecognizedRequest):
        plan_for(text)


def test_provider_interface_is_deterministic() -> None:
    async def twice() -> list[ParsedIntent]:
        provider = RulesProvider()
        out = []
        for _ in range(2):
            completion = await provider.complete(
                system="s", prompt="run date then read a", schema=ParsedIntent
            )
            assert completion.usage.provider == "rules" and completion.usage.cost_usd == 0
            out.append(completion.value)
        return out

    first, second = anyio.run(twice)
    assert first == second
    assert [a.after for a in first.actions] == [[], [0]]
