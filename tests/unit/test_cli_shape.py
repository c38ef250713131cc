"""The command line as a user meets it: shell completion that a real bash runs, --help and the
README's command table saying the same, ``validate`` within 100 columns, ``--json`` where a
command prints data, and usage errors exiting 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"
BIN = Path(sys.executable).parent
EXAMPLES = int(os.environ.get("AGENT_RUNTIME_HYPOTHESIS_EXAMPLES", "200"))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this venv's ``agent-runtime`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_AGENT_RUNTIME")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def bash_script() -> str:
    done = subprocess.run(
        [str(BIN / "agent-runtime"), "completion", "bash"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def complete(script_path: Path, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last word being typed), asking
    the completion function the script registered for ``agent-runtime``, as bash does on TAB."""
    words_array = " ".join(f"'{w}'" for w in words)
    program = (
        f'source "$1"\n'
        'complete -p agent-runtime >/dev/null || { echo "not registered" >&2; exit 9; }\n'
        f"COMP_WORDS=({words_array})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        'COMP_LINE="${COMP_WORDS[*]}"\n'
        "COMP_POINT=${#COMP_LINE}\n"
        "_agent_runtime_completion agent-runtime\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program, "bash", str(script_path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_subcommands_and_options(bash_script: str, tmp_path: Path) -> None:
    script = tmp_path / "agent-runtime.bash"
    script.write_text(bash_script)
    assert complete(script, "agent-runtime", "va") == ["validate"]
    assert set(complete(script, "agent-runtime", "re")) == {"redis", "reject"}
    assert complete(script, "agent-runtime", "dlq", "pu") == ["purge"]
    assert complete(script, "agent-runtime", "trace", "--js") == ["--json"]
    assert complete(script, "agent-runtime", "completion", "z") == ["zsh"]
    # every command is offered on an empty word
    offered = set(complete(script, "agent-runtime", ""))
    assert {"worker", "up", "send", "run", "validate", "dlq", "completion"} <= offered


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_call_back_the_same_command(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    out = capsys.readouterr().out
    assert "_AGENT_RUNTIME_COMPLETE" in out and "agent-runtime" in out


def test_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["completion", "tcsh"])
    assert exited.value.code == 2
    assert "tcsh" in capsys.readouterr().err


def help_commands(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The ``Commands:`` section of ``agent-runtime --help``: name -> one-line help."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    section = text.split("Commands:\n", 1)[1]
    found: dict[str, str] = {}
    last = ""
    for line in section.splitlines():
        if not line.strip():
            break
        match = re.match(r"^  (\S+)\s+(.*)$", line)
        if match and not line.startswith("   "):
            last = match.group(1)
            found[last] = match.group(2).strip()
        else:  # a wrapped help text continues on the next line
            found[last] += " " + line.strip()
    return found


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.*?) \|$", section, flags=re.M)
    return dict(rows)


def test_readme_command_table_matches_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    in_help = help_commands(capsys)
    in_readme = readme_commands()
    assert list(in_readme) == list(in_help), "README's command table: names or order differ"
    assert in_readme == in_help


def test_validate_fits_100_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["validate", str(DEFAULT)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    too_wide = [line for line in lines if len(line) > 100]
    assert not too_wide, too_wide
    assert lines[-1] == "OK"
    # nothing was cut: every agent, class path and message type is there as a whole word
    words = set(out.replace(",", " ").split())
    described = json.loads(_validate_json(capsys))
    for agent in described["agents"]:
        assert {agent["name"], agent["class"], *agent["consumes"], *agent["produces"]} <= words


def _validate_json(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["validate", str(DEFAULT), "--json"]) == 0
    return capsys.readouterr().out


def test_validate_piped_keeps_one_line_per_agent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["validate", str(DEFAULT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    router = [line for line in lines if line.startswith("router ")]
    assert len(router) == 1
    assert "plan.verdict, task.result, approval.resolved, approval.timer" in router[0]


def test_validate_json_lists_agents_or_problems(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    described = json.loads(_validate_json(capsys))
    assert described["valid"] is True and described["problems"] == []
    router = next(a for a in described["agents"] if a["name"] == "router")
    assert router["class"] == "agents.router:Router" and "task.result" in router["consumes"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("agents:\n  a:\n    class: os:system\n    replicas: -1\nbogus: 1\n")
    assert main(["validate", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["valid"] is False and len(answer["problems"]) >= 2
    assert any("bogus" in p for p in answer["problems"])
    # the one-line failures on stderr stay as they were
    assert all(line.startswith("agent-runtime: ") for line in captured.err.splitlines())


def test_usage_errors_exit_2_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["trace", "not-a-uuid"], ["send"], ["no-such-command"], ["status", "--bogus"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        err = capsys.readouterr().err
        assert "Usage: agent-runtime" in err and "Error:" in err, argv


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("agent-runtime ")
    for command in ("validate", "approve", "dlq", "completion"):
        assert main([command, "--help"]) == 0
        assert f"Usage: agent-runtime {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["send", "run", "status", "trace", "health", "approve"])
def test_shared_options_are_the_same_everywhere(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "-c, --config FILE" in out and "[env var: AGENT_RUNTIME_CONFIG" in out
    assert "--redis-url URL" in out and "--json" in out


def test_operator_tables_fit_the_terminal_and_stay_whole_when_piped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent_runtime.observability.render import table

    rows = [
        ("executor", 12, "executor-host-with-a-long-name-0 and more words", 3.5),
        ("router", 1234, "router-h-1", None),
    ]
    headers = ["AGENT", "LAG", "CONSUMER", "AGE"]
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = table(headers, rows).splitlines()
    assert len(piped) == 3  # one line per row: nothing wraps in a pipe
    assert piped[1].startswith("  executor    12  executor-host-with-a-long-name-0 and more words")

    monkeypatch.setenv("COLUMNS", "60")
    fitted = table(headers, rows).splitlines()
    assert all(len(line) <= 60 for line in fitted), fitted
    assert len(fitted) > 3  # the long cell wrapped inside its column
    text = " ".join(fitted)
    for word in ("executor-host-with-a-long-name-0", "1234", "router-h-1", "3.5"):
        assert word in text
    lag = next(line for line in fitted if "router" in line)
    assert "  1234  " in lag  # numbers stay right-aligned under LAG


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.text(max_size=60) | st.lists(st.text(max_size=20), max_size=4),
            min_size=3,
            max_size=3,
        ),
        max_size=6,
    ),
    columns=st.integers(20, 200),
)
def test_tables_of_any_text_fit_when_the_words_do(rows: list[list[Any]], columns: int) -> None:
    """Any cell text (control characters, wide characters, newlines): never an exception, and
    the table fits ``columns`` whenever its longest words do."""
    from agent_runtime.observability.tables import format_table

    text = format_table(("A", "B", "C"), rows, columns=columns)
    assert isinstance(text, str)
    printable = all(
        all(ch.isascii() and ch.isprintable() for ch in (c if isinstance(c, str) else "".join(c)))
        for row in rows
        for c in row
    )
    longest = [
        max([1, *(len(w) for r in rows for w in (r[i].split() if isinstance(r[i], str) else r[i]))])
        for i in range(3)
    ]
    if printable and sum(longest) + 4 <= columns:
        assert all(len(line) <= columns for line in text.splitlines()), text


def test_parse_args_parses_as_main_does_without_running() -> None:
    from agent_runtime.cli import parse_args

    args = parse_args(["dlq", "purge", "--all", "-y", "--redis-url", "redis://h:1"])
    assert args.command == "dlq purge" and args.action == "purge"
    assert args.all is True and args.yes is True and args.ids == []
    assert args.redis_url == "redis://h:1"
    args = parse_args(["worker", "planner", "--slot", "3"])
    assert (args.command, args.name, args.slot) == ("worker", "planner", "3")
    with pytest.raises(click.UsageError):
        parse_args(["worker"])
