"""``shell``: run one allow-listed command, argv only (never through a shell).

Guards: argv[0] must be a bare name on ``commands`` and is resolved on the tool's own PATH;
arguments matching ``deny_args`` are refused; the child gets an empty stdin, the sandbox as
working directory, an environment holding only ``env_allow`` variables (never secrets), its own
process group (killed whole on timeout) and a cap on the output kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import Field

from agents.executors.base import ToolContext, ToolError, ToolOptions, ToolOutput, only

DEFAULT_COMMANDS = [
    "uptime",
    "date",
    "whoami",
    "uname",
    "df",
    "hostname",
    "echo",
    "true",
    "false",
    "sleep",
]


class ShellOptions(ToolOptions):
    commands: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COMMANDS),
        description="bare command names that may run",
    )
    deny_args: list[str] = Field(
        default_factory=lambda: [r"^/", r"\.\.", r"[\x00\n\r]"],
        description="regexes; an argument matching one is refused",
    )
    timeout: float = Field(default=10.0, gt=0, le=3_600)
    max_output_bytes: int = Field(default=8 * 1024, ge=1, le=4 * 1024 * 1024)
    max_args: int = Field(default=32, ge=1, le=1_000)
    path: str = Field(
        default="/usr/local/bin:/usr/bin:/bin",
        description="PATH used to find commands and given to the child",
    )
    env_allow: list[str] = Field(
        default_factory=lambda: ["LANG", "LC_ALL", "TZ"],
        description="variables copied from the worker's environment",
    )


class Shell:
    """args: ``argv`` (list of strings). Output: stdout, stderr, exit code."""

    Options = ShellOptions

    def __init__(self, options: ShellOptions) -> None:
        self.options = options
        self._deny = [re.compile(p) for p in options.deny_args]

    def command(self, args: dict[str, Any]) -> list[str]:
        only(args, "argv")
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ToolError("'argv' must be a non-empty list of strings")
        if len(argv) > self.options.max_args:
            raise ToolError(f"too many arguments ({len(argv)} > {self.options.max_args})")
        name = argv[0]
        if "/" in name or name not in self.options.commands:
            raise ToolError(
                f"command {name!r} is not allowed (allowed: {', '.join(self.options.commands)})"
            )
        for arg in argv[1:]:
            if any(p.search(arg) for p in self._deny):
                raise ToolError(f"argument {arg!r} is not allowed")
        found = shutil.which(name, path=self.options.path)
        if found is None:
            raise ToolError(f"command {name!r} is not installed on this host")
        return [found, *argv[1:]]

    def environment(self) -> dict[str, str]:
        env = {"PATH": self.options.path}
        env.update({k: os.environ[k] for k in self.options.env_allow if k in os.environ})
        return env

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        argv = self.command(args)
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            cwd=context.sandbox,
            env=self.environment(),
            start_new_session=True,
        )
        cap = self.options.max_output_bytes
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            with anyio.fail_after(self.options.timeout):
                async with anyio.create_task_group() as tg:
                    assert process.stdout is not None and process.stderr is not None
                    tg.start_soon(_collect, process.stdout, out, cap)
                    tg.start_soon(_collect, process.stderr, err, cap)
                code = await process.wait()
        except TimeoutError:
            raise ToolError(f"{argv[0]} timed out after {self.options.timeout}s") from None
        finally:
            await _kill_group(process)
        stdout, stderr = b"".join(out), b"".join(err)
        truncated = len(stdout) > cap or len(stderr) > cap
        err_text = stderr[:cap].decode(errors="replace")
        result = {
            "exit_code": code,
            "stdout": stdout[:cap].decode(errors="replace"),
            "stderr": err_text,
        }
        if code != 0:
            raise ToolError(
                f"{os.path.basename(argv[0])} exited with code {code}: {err_text.strip()[:500]}"
            )
        return ToolOutput(result, truncated=truncated)


async def _collect(stream: ByteReceiveStream, into: list[bytes], cap: int) -> None:
    """Keep up to cap + 1 bytes; keep draining so the child never blocks on a full pipe."""
    kept = 0
    async for chunk in stream:
        if kept <= cap:
            into.append(chunk[: cap + 1 - kept])
            kept += len(into[-1])


async def _kill_group(process: Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await process.wait()
    with contextlib.suppress(Exception):
        await process.aclose()
