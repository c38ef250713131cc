"""agent_runtime/config/validation.py: every problem of a config at once, each with file:line; llm
blocks against their typed model and the API-key variable their provider needs; file paths
of an agent's config relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.validation import load_valid, problems
from agent_runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BROKEN = """\
key_prefix: broken
allowed_modules: [tests.fixtures]
agents:
  intent_parser:
    class: agents.intent_parser:IntentParser
    config:
      llm:
        provider: anthropic
        modle: claude-haiku-4-5
  planner:
    class: agents.planner:Planner
    config:
      llm:
        provider: gemini
  safety_checker:
    class: agents.safety_checker:SafetyChecker
    config:
      policy_file: missing-policy.yaml
  echo:
    class: tests.fixtures.agents:Echo
    worker: {concurrency: 0}
  sink:
    class: tests.fixtures.agents:Nope
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    found = problems(path, environ={})
    expected = [
        (line_of(BROKEN, "modle:"), "agents.intent_parser.config.llm.modle: unknown key"),
        (
            line_of(BROKEN, "provider: gemini"),
            "agents.planner.config.llm.provider: Input should be",
        ),
        (line_of(BROKEN, "policy_file:"), "agents.safety_checker.config.policy_file: cannot read"),
        (line_of(BROKEN, "concurrency: 0"), "agents.echo.worker.concurrency:"),
        (line_of(BROKEN, "tests.fixtures.agents:Nope"), "agents.sink.class:"),
    ]
    assert len(found) == len(expected), found
    for line, text in expected:
        assert any(p.startswith(f"{path}:{line}: {text}") for p in found), (line, text, found)
    assert any(str(tmp_path / "missing-policy.yaml") in p for p in found), (
        "the policy path is resolved against the config file's folder"
    )


def default_pipeline(folder: Path, text: str | None = None) -> Path:
    """configs/default.yaml (or ``text``) in ``folder``, with the shipped policy beside it."""
    (folder / "policy.yaml").write_text((ROOT / "configs" / "policy.yaml").read_text())
    path = folder / "pipeline.yaml"
    path.write_text(text or (ROOT / "configs" / "default.yaml").read_text())
    return path


def test_a_provider_needs_its_api_key_variable_only_where_it_runs(tmp_path: Path) -> None:
    default = (ROOT / "configs" / "default.yaml").read_text()
    text = default.replace("provider: rules ", "provider: anthropic", 1)
    path = default_pipeline(tmp_path, text)
    missing = problems(path, environ={})
    assert missing == [
        f"{path}:{line_of(text, 'provider: anthropic')}: "
        "agents.intent_parser.config.llm.provider: the anthropic provider needs the "
        "environment variable ANTHROPIC_API_KEY, which is not set"
    ]
    assert problems(path, environ={"ANTHROPIC_API_KEY": "k"}) == []
    assert problems(path, environment_for=["planner"], environ={}) == []
    assert problems(path, environment_for=[], environ={}) == []


def test_yaml_errors_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("agents:\n  a:\n    class: [unclosed\n  b: 1\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_cross_agent_problems_name_their_line(tmp_path: Path) -> None:
    text = (
        "key_prefix: routes\nallowed_modules: [tests.fixtures]\nagents:\n"
        "  echo:\n    class: tests.fixtures.agents:Echo\n"
        "    routes: {test.echoed: nobody}\n"
        "  sink:\n    class: tests.fixtures.agents:Sink\n"
    )
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:{line_of(text, 'routes:')}: agents.echo.routes")
    assert "unknown agent 'nobody'" in problem
    with pytest.raises(ConfigError) as raised:
        load_valid(path)
    assert str(raised.value) == problem


def test_policy_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "strict.yaml").write_text("max_steps: 3\n")
    default = (ROOT / "configs" / "default.yaml").read_text()
    path = default_pipeline(
        folder, default.replace("policy_file: policy.yaml", "policy_file: strict.yaml")
    )
    assert problems(path, environ={}) == []
    pipeline = Pipeline.load(path)  # what a worker builds
    checker = pipeline.agents["safety_checker"].config
    assert checker.policy_file == str(folder / "strict.yaml")  # type: ignore[attr-defined]
    assert checker.rules.max_steps == 3  # type: ignore[attr-defined]


def test_the_shipped_configs_are_valid() -> None:
    for path in (ROOT / "configs" / "default.yaml", ROOT / "configs/examples/text_stats.yaml"):
        assert problems(path, environ={}) == [], path
