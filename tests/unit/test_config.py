"""Pipeline config errors a user meets: each names the file:line or the agent and key at fault,
and a class outside the allow-list is refused without being imported."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import ConfigError, ImportNotAllowedError

GOOD = """\
key_prefix: unit
allowed_modules: [tests.fixtures]
agents:
  echo:
    class: tests.fixtures.agents:Echo
  sink:
    class: tests.fixtures.agents:Sink
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        Pipeline.load(path)
    return str(info.value)


def test_good_config_loads(tmp_path: Path) -> None:
    pipeline = Pipeline.load(write(tmp_path, GOOD))
    assert set(pipeline.agents) == {"echo", "sink"}
    assert pipeline.routing.agent_for("test.echoed") == "sink"


def test_unknown_top_level_key_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "agnets_extra: 1\n")
    message = load_error(path)
    assert f"{path}:8: agnets_extra: unknown key" in message


def test_unknown_key_in_an_agent_names_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace(
            "    class: tests.fixtures.agents:Sink",
            "    class: tests.fixtures.agents:Sink\n    replica: 2",
        ),
    )
    assert f"{path}:8: agents.sink.replica: unknown key" in load_error(path)


def test_unknown_worker_setting_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "worker:\n  concurency: 4\n")
    assert f"{path}:9: worker.concurency: unknown key" in load_error(path)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "agents: [unclosed\n")
    assert "invalid YAML" in load_error(path)


@pytest.mark.parametrize(
    ("class_path", "expected"),
    [
        ("tests.fixtures.agents:Echo()", "is not a dotted path"),
        ("tests.fixtures.agents:Nope", "has no attribute 'Nope'"),
        ("tests.fixtures.agents:EchoConfig", "is not an Agent subclass"),
        (
            "tests.fixtures.missing_module:Echo",
            "cannot import module 'tests.fixtures.missing_module'",
        ),
    ],
)
def test_bad_class_paths(tmp_path: Path, class_path: str, expected: str) -> None:
    path = write(tmp_path, GOOD.replace("tests.fixtures.agents:Sink", class_path))
    message = load_error(path)
    assert "agents.sink.class" in message
    assert expected in message


def test_module_outside_allow_list_is_refused_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    package = tmp_path / "code" / "sneaky_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    path = write(tmp_path, GOOD.replace("tests.fixtures.agents:Sink", "sneaky_plugin:Agent"))

    with pytest.raises(ImportNotAllowedError, match="refusing to import 'sneaky_plugin:Agent'"):
        Pipeline.load(path)
    assert "sneaky_plugin" not in sys.modules
    assert not marker.exists(), "a module outside the allow-list must never be imported"


def test_allow_list_matches_whole_module_names(tmp_path: Path) -> None:
    text = GOOD.replace("[tests.fixtures]", "[tests.fix]")
    with pytest.raises(ImportNotAllowedError, match="not under an allowed prefix"):
        Pipeline.load(write(tmp_path, text))


def test_agent_config_block_is_checked_against_its_config_model(tmp_path: Path) -> None:
    text = GOOD.replace(
        "class: tests.fixtures.agents:Echo",
        "class: tests.fixtures.agents:Echo\n    config: {sleep_seconds: slow}",
    )
    message = load_error(write(tmp_path, text))
    assert "agents.echo.config (Echo.Config)" in message
    assert "sleep_seconds" in message


def test_agent_config_block_rejects_unknown_options(tmp_path: Path) -> None:
    text = GOOD.replace(
        "class: tests.fixtures.agents:Echo",
        "class: tests.fixtures.agents:Echo\n    config: {fail_sometimes: true}",
    )
    message = load_error(write(tmp_path, text))
    assert "agents.echo.config" in message
    assert "fail_sometimes" in message


def test_consumed_type_without_producer(tmp_path: Path) -> None:
    text = GOOD.replace("  echo:\n    class: tests.fixtures.agents:Echo\n", "")
    message = load_error(write(tmp_path, text))
    assert "agents.sink: consumes 'test.echoed' but no agent produces it" in message


def test_consumes_override_must_be_handled_by_the_class(tmp_path: Path) -> None:
    text = GOOD.replace(
        "class: tests.fixtures.agents:Sink",
        "class: tests.fixtures.agents:Sink\n    consumes: [plan.created]",
    )
    assert "agents.sink.consumes: Sink cannot handle ['plan.created']" in load_error(
        write(tmp_path, text)
    )


def test_route_to_unknown_agent(tmp_path: Path) -> None:
    text = GOOD.replace(
        "class: tests.fixtures.agents:Echo",
        "class: tests.fixtures.agents:Echo\n    routes: {test.echoed: nobody}",
    )
    assert "agents.echo.routes.test.echoed: unknown agent 'nobody'" in load_error(
        write(tmp_path, text)
    )


def test_bad_worker_override_is_reported_per_agent(tmp_path: Path) -> None:
    text = GOOD.replace(
        "class: tests.fixtures.agents:Sink",
        "class: tests.fixtures.agents:Sink\n    worker: {concurrency: 0}",
    )
    pipeline = Pipeline.load(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"agents\.sink\.worker"):
        pipeline.config.worker_settings("sink")


def test_python_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    package = tmp_path / "conf" / "plugins" / "unit_plugin_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from tests.fixtures.agents import Sink as Renamed\n")
    text = GOOD.replace("[tests.fixtures]", "[tests.fixtures, unit_plugin_pkg]").replace(
        "tests.fixtures.agents:Sink", "unit_plugin_pkg:Renamed"
    )
    path = write(tmp_path / "conf", "python_paths: [plugins]\n" + text)

    pipeline = Pipeline.load(path)
    assert pipeline.config.python_paths == [str((tmp_path / "conf" / "plugins").resolve())]
    assert pipeline.agents["sink"].cls.__name__ == "Sink"


def test_python_path_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "python_paths:\n  - plugins\n  - missing\n" + GOOD)
    (tmp_path / "plugins").mkdir()
    message = load_error(path)
    assert f"{path}:3: python_paths.1: 'missing' is not a directory" in message


def test_consumer_removal_waits_longer_than_live_workers_reads() -> None:
    from pydantic import ValidationError

    from agent_runtime.config.settings import WorkerSettings

    assert WorkerSettings().consumer_idle_remove == 3600.0
    assert WorkerSettings(consumer_idle_remove=None).consumer_idle_remove is None  # off
    assert WorkerSettings(consumer_idle_remove=0.5, block_ms=200).consumer_idle_remove == 0.5
    with pytest.raises(ValidationError, match="consumer_idle_remove must be longer"):
        WorkerSettings(consumer_idle_remove=1.0, block_ms=1000)
