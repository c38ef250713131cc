"""Dotted-path imports: syntax, the allow-list boundary, refused modules stay unimported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent_runtime.config.registry import import_object, is_allowed, split_path
from agent_runtime.errors import ConfigError, ImportNotAllowedError
from tests.fixtures.agents import Echo, EchoConfig


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pkg.mod:Class", ("pkg.mod", "Class")),
        ("pkg.mod:Class.Inner", ("pkg.mod", "Class.Inner")),
        ("pkg.mod.Class", ("pkg.mod", "Class")),
    ],
)
def test_split_path(path: str, expected: tuple[str, str]) -> None:
    assert split_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "Class",
        "pkg.mod:",
        "pkg..mod:X",
        "pkg.mod:X()",
        "os.system('x')",
        "pkg/mod:X",
        "pkg.mod:X:Y",
    ],
)
def test_split_path_rejects_malformed(path: str) -> None:
    with pytest.raises(ConfigError):
        split_path(path)


@pytest.mark.parametrize(
    ("module", "allowed", "expected"),
    [
        ("agents", [], True),  # built-in agents are always allowed
        ("agents.executors.shell", [], True),
        ("agentsx", [], False),  # a prefix matches whole dotted names only
        ("mycorp.agents", ["mycorp"], True),
        ("mycorp", ["mycorp"], True),
        ("mycorporate.agents", ["mycorp"], False),
        ("os", ["mycorp"], False),
    ],
)
def test_is_allowed(module: str, allowed: list[str], expected: bool) -> None:
    assert is_allowed(module, allowed) is expected


def test_import_object_allowed() -> None:
    assert import_object("tests.fixtures.agents:Echo", ["tests.fixtures"]) is Echo
    assert import_object("tests.fixtures.agents:Echo.Config", ["tests.fixtures"]) is EchoConfig


def test_import_object_refuses_before_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "registry_probe.py").write_text(f"open({str(marker)!r}, 'w').close()\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportNotAllowedError, match="add its package to 'allowed_modules'"):
        import_object("registry_probe:X", ["tests.fixtures"])
    assert "registry_probe" not in sys.modules
    assert not marker.exists()
    assert import_object("registry_probe:X", ["registry_probe"]) == 1
    assert marker.exists()
    monkeypatch.delitem(sys.modules, "registry_probe")


def test_import_object_missing_attribute() -> None:
    with pytest.raises(ConfigError, match="has no attribute 'Missing'"):
        import_object("tests.fixtures.agents:Missing", ["tests.fixtures"])
