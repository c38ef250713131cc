"""Worker settings from the environment: one ``AGENT_RUNTIME_*`` variable per setting,
generated from the settings model, winning over the YAML, checked by ``validate`` and listed
in docs/operations.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.cli import main
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.settings import WORKER_ENV, WorkerSettings, with_worker_env
from agent_runtime.config.validation import problems
from agent_runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"
EXAMPLES = int(os.environ.get("AGENT_RUNTIME_HYPOTHESIS_EXAMPLES", "200"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)


def test_every_setting_has_a_documented_variable() -> None:
    assert sorted(WORKER_ENV.values()) == sorted(WorkerSettings.model_fields)
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(AGENT_RUNTIME_[A-Z_]+)` \|", docs, flags=re.M))
    assert documented == set(WORKER_ENV)


def test_environment_wins_over_the_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    text = DEFAULT.read_text(encoding="utf-8")
    config.write_text(text.replace("agents:\n", "worker:\n  concurrency: 3\nagents:\n", 1))
    (tmp_path / "policy.yaml").write_text((ROOT / "configs" / "policy.yaml").read_text())
    pipeline = Pipeline.load(config)
    assert pipeline.worker_settings("planner").concurrency == 3  # the YAML, no variable

    monkeypatch.setenv("AGENT_RUNTIME_CONCURRENCY", "7")
    monkeypatch.setenv("AGENT_RUNTIME_TRACE", "false")
    monkeypatch.setenv("AGENT_RUNTIME_LEASE_INTERVAL", "")  # empty: unset
    monkeypatch.setenv("AGENT_RUNTIME_MAX_MESSAGE_BYTES", "65536")
    monkeypatch.setenv("AGENT_RUNTIME_CONSUMER_IDLE_REMOVE", "null")  # YAML's null: never
    for agent in pipeline.agents:
        settings = pipeline.worker_settings(agent)
        assert settings.concurrency == 7 and settings.trace is False
        assert settings.lease_interval is None
        assert settings.consumer_idle_remove is None
    assert pipeline.codec().max_bytes == 65536  # the pipeline-wide settings too


def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"AGENT_RUNTIME_CONCURRENCY": "lots", "AGENT_RUNTIME_RECLAIM_IDLE": "-1"}
    found = problems(DEFAULT, environ=environ)
    assert any(line.startswith("AGENT_RUNTIME_CONCURRENCY='lots': ") for line in found), found
    assert any(line.startswith("AGENT_RUNTIME_RECLAIM_IDLE='-1': ") for line in found), found
    assert problems(DEFAULT, environ={}) == []

    monkeypatch.setenv("AGENT_RUNTIME_CONCURRENCY", "0")
    assert main(["validate", str(DEFAULT)]) == 2
    err = capsys.readouterr().err
    assert "agent-runtime: error: AGENT_RUNTIME_CONCURRENCY='0': " in err
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_CONCURRENCY"):
        Pipeline.load(DEFAULT).worker_settings("planner")


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(WORKER_ENV)),
        st.text(max_size=40) | st.integers(-(2**70), 2**70).map(str) | st.just("null"),
        max_size=6,
    )
)
def test_any_environment_gives_settings_or_one_line_per_bad_variable(
    environ: dict[str, str],
) -> None:
    """Hostile values in the environment: valid settings, or a ConfigError whose every line
    names a variable that was set (never another exception)."""
    try:
        result = with_worker_env(WorkerSettings(), environ)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines
        assert all(
            line.startswith("AGENT_RUNTIME_") or "worker settings with" in line for line in lines
        )
    else:
        assert isinstance(result, WorkerSettings)
