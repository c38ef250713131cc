"""What a worker process imports at start (issue 17, deliverable 5: start time). Heavy modules
a worker never uses stay out of it: LLM SDKs, the HTTP gateway's server, the other commands of
the CLI, and rich (which structlog imports for tracebacks the runtime does not render). Each
check runs a fresh interpreter, as ``up`` starts a worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from agent_runtime.cli import COMMAND_MODULES, COMMANDS, build_cli

ROOT = Path(__file__).resolve().parents[2]

#: modules no worker of configs/default.yaml (offline rules provider) may import at start
NOT_IN_A_WORKER = (
    "anthropic",
    "openai",
    "fastapi",
    "uvicorn",
    "starlette",
    "rich",
    # metrics are off without a metrics port (observability/process.py imports them then)
    "prometheus_client",
    # redis 8 imports the OTel SDK metrics where installed (agent_runtime/transport/__init__.py)
    "opentelemetry.sdk.metrics",
    # the Ed25519 code: only the safety checker's and executors' instances load it (approval.py)
    "cryptography.hazmat",
    "agent_runtime.gateway",
    "agent_runtime.cli.run",
    "agent_runtime.cli.serve",
    "agent_runtime.cli.up",
    "agent_runtime.cli.dlq",
    "agent_runtime.cli.approve",
)


def loaded_after(code: str) -> set[str]:
    """The top-level names of sys.modules (and the listed dotted ones) after ``code`` ran in a
    fresh interpreter in the project root."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"wanted = {list(NOT_IN_A_WORKER)!r}\n"
        "print(json.dumps([w for w in wanted if w in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_worker_imports_none_of_the_heavy_modules() -> None:
    code = (
        "import agent_runtime.cli as cli\n"
        "cli.build_cli().get_command(None, 'worker')\n"  # what 'agent-runtime worker' looks up
        "import agent_runtime.worker.build, agent_runtime.worker.loop\n"
        "from agent_runtime.config.validation import load_valid\n"
        "p = load_valid('configs/default.yaml', environment_for=None)\n"  # every agent class
        "from agent_runtime.observability.logging import configure_logging\n"
        "configure_logging(json=False)\n"
        "for name in p.agents: p.agents[name].cls\n"
    )
    assert loaded_after(code) == set()


def test_rich_stays_importable_after_agent_runtime() -> None:
    code = (
        "import agent_runtime, structlog.dev\n"
        "assert structlog.dev.rich is None\n"  # structlog did not take rich in
        "from agent_runtime.observability.tables import format_table\n"
        "format_table(('A',), [('x',)])\n"  # the CLI's tables still draw with rich
    )
    assert "rich" in loaded_after(code)


def test_the_otel_sdk_stays_importable_after_agent_runtime() -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")  # the otel extra (a dev install has it)
    code = (
        "import agent_runtime, redis.observability.providers as p\n"
        "assert p.OTEL_AVAILABLE is False\n"  # redis did not take the SDK in
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "MeterProvider()\n"  # the application's (and the runtime's) own use still works
    )
    assert "opentelemetry.sdk.metrics" in loaded_after(code)


def test_metrics_are_built_where_a_port_is_given() -> None:
    code = (
        "import agent_runtime.observability as o\n"
        "o.Metrics().registry\n"  # the package's lazy names still resolve
        "from agent_runtime.observability.process import WorkerObservability\n"
    )
    assert "prometheus_client" in loaded_after(code)


def test_the_command_table_names_every_command_in_help_order() -> None:
    """COMMAND_MODULES (the lazy table) says exactly what the modules register, in order."""
    group = click.Group("probe")
    for module in COMMANDS:
        __import__(module, fromlist=["register"]).register(group)
    assert list(group.commands) == list(COMMAND_MODULES)
    cli = build_cli()
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == list(COMMAND_MODULES)
    for name in COMMAND_MODULES:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_one_parse_of_a_config_gives_what_two_parses_gave() -> None:
    """config.model._parse builds the data from the node tree it composed (one parse): the
    same data and the same tree (so the same lines) as compose + safe_load, merge keys too."""
    import yaml

    from agent_runtime.config.model import _parse, line_index

    documents = [
        (ROOT / "configs" / "default.yaml").read_text(),
        "a: &base {x: 1, y: [1, 2]}\nb:\n  <<: *base\n  y: 3\n",  # merge key: two parses
        "k: !!str 5\nlist:\n  - {a: 1}\n  - [x, y]\n",
        "",
    ]
    for text in documents:
        node, data = _parse(text)
        assert data == yaml.safe_load(text)
        expected = yaml.compose(text, Loader=yaml.SafeLoader)
        assert line_index(node) == line_index(expected)
