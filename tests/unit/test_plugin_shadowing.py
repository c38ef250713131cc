"""A plug-in folder on ``python_paths`` can never shadow the runtime's own packages: a real
plug-in dir holding an ``agents`` package (or ``protocols.py``, or ``agent_runtime/``) is
refused at validation with a clear error, before anything is imported from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import agents
from agent_runtime.cli import main
from agent_runtime.config.model import PipelineConfig, load_config
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.validation import problems
from agent_runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
python_paths:
  - plugins
allowed_modules:
  - my_plugin
agents:
  intent_parser:
    class: agents.intent_parser:IntentParser
"""


def plugin_dir(tmp_path: Path, *, shadow: str) -> Path:
    """A config and its plug-in folder: a harmless package ``my_plugin`` and, unless
    ``shadow`` is empty, a module or package named ``shadow`` that would hijack imports."""
    plugins = tmp_path / "plugins"
    (plugins / "my_plugin").mkdir(parents=True)
    (plugins / "my_plugin" / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    hijack = f"open({str(marker)!r}, 'w').write('hijacked')\n"
    if shadow.endswith(".py"):
        (plugins / shadow).write_text(hijack)
    elif shadow:
        (plugins / shadow).mkdir()
        (plugins / shadow / "__init__.py").write_text(hijack)
        (plugins / shadow / "intent_parser.py").write_text(hijack + "class IntentParser: ...\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    return config


@pytest.mark.parametrize("shadow", ["agents", "protocols.py", "agent_runtime"])
def test_a_plugin_dir_shadowing_a_builtin_package_is_refused(
    shadow: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = plugin_dir(tmp_path, shadow=shadow)
    name = shadow.removesuffix(".py")
    path_before = list(sys.path)

    found = problems(config, environ={})
    assert len(found) == 1, found
    assert f"{config}:2: python_paths.0:" in found[0]
    assert f"would shadow the built-in package {name!r}" in found[0]
    assert str(tmp_path / "plugins" / shadow) in found[0]

    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "would shadow the built-in package" in err and "Traceback" not in err

    with pytest.raises(ConfigError, match="would shadow"):
        load_config(config)
    # a config built in code (no file) is refused the same way, before sys.path changes
    with pytest.raises(ConfigError, match="would shadow"):
        Pipeline.build(
            PipelineConfig.model_validate(
                {
                    "python_paths": [str(tmp_path / "plugins")],
                    "agents": {"intent_parser": {"class": "agents.intent_parser:IntentParser"}},
                }
            )
        )
    assert sys.path == path_before
    assert not (tmp_path / "imported").exists(), "the shadowing module was imported"
    assert Path(agents.__file__).resolve().is_relative_to(ROOT)


def test_a_plugin_dir_without_a_reserved_name_is_accepted(tmp_path: Path) -> None:
    config = plugin_dir(tmp_path, shadow="")
    # (this one-agent pipeline has a routing problem of its own; no python_paths one)
    assert not [p for p in problems(config, environ={}) if "python_paths" in p]
    assert load_config(config).python_paths == [str((tmp_path / "plugins").resolve())]
