"""Where a worker's consumer name comes from: ``--consumer``, else
``AGENT_RUNTIME_CONSUMER_NAME`` (a stable name for a replaced container), else
NAME-HOSTNAME-SLOT; ``up`` never hands one name to all its children."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_runtime.cli.worker import consumer_from_env
from agent_runtime.worker.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]


def test_the_environment_names_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_RUNTIME_CONSUMER_NAME", raising=False)
    assert consumer_from_env() is None
    monkeypatch.setenv("AGENT_RUNTIME_CONSUMER_NAME", " executor-3 ")
    assert consumer_from_env() == "executor-3"


@pytest.mark.parametrize("bad", ["two words", "x" * 201, "tab\\there", "bell\\x07"])
def test_a_bad_consumer_name_is_refused_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CONSUMER_NAME", bad.encode().decode("unicode_escape"))
    with pytest.raises(SystemExit, match="AGENT_RUNTIME_CONSUMER_NAME must be"):
        consumer_from_env()


def test_up_gives_each_child_its_slot_name_not_the_environments() -> None:
    sup = Supervisor(
        ROOT / "configs" / "default.yaml",
        "redis://127.0.0.1:1/0",
        env={"AGENT_RUNTIME_CONSUMER_NAME": "shared", "PATH": "/usr/bin"},
    )
    children = sup._children
    assert len(children) > 1
    for child in children:
        assert "AGENT_RUNTIME_CONSUMER_NAME" not in sup._child_env(child)
        assert sup._argv(child)[sup._argv(child).index("--slot") + 1] == str(child.slot)
