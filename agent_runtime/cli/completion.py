"""``agent-runtime completion bash|zsh|fish``: print the shell completion script.

The script calls ``agent-runtime`` back with ``_AGENT_RUNTIME_COMPLETE`` set; click answers
from the same command definitions that build ``--help``, so commands, options and choices
complete as they are. Install it with, for example::

    agent-runtime completion bash > ~/.local/share/bash-completion/completions/agent-runtime
    agent-runtime completion zsh > "${fpath[1]}/_agent-runtime"
    agent-runtime completion fish > ~/.config/fish/completions/agent-runtime.fish
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from agent_runtime.cli.common import Args, runs

SHELLS = ("bash", "zsh", "fish")
PROG = "agent-runtime"
COMPLETE_VAR = "_AGENT_RUNTIME_COMPLETE"


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "completion",
            callback=runs(run),
            short_help="print the shell completion script (bash, zsh or fish)",
            help="Print the completion script for SHELL on stdout. Load it now with "
            "'eval \"$(agent-runtime completion bash)\"', or install it where your shell "
            'looks for completions (docs/operations.md, "Shell completion").',
            params=[click.Argument(["shell"], type=click.Choice(SHELLS), metavar="SHELL")],
        )
    )


def script(shell: str) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None, shell  # SHELLS are the ones click ships
    return cls(root, {}, PROG, COMPLETE_VAR).source()


def run(args: Args) -> int:
    print(script(args.shell))
    return 0
