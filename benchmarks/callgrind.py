"""Counting a benchmark phase's CPU instructions with valgrind (callgrind), shared by the
``*instructions.py`` benchmarks: a script runs itself under callgrind with instrumentation off
at start, switches it on around the phase it measures (:func:`instrument`) and the driver reads
valgrind's ``Collected`` total (:func:`collected`). Instruction counts do not move with the
load of other processes on the machine, unlike wall-clock figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence


def instrument(on: bool) -> None:
    """Switch callgrind's counting for this process (no-op when not run under valgrind)."""
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        capture_output=True,
        check=False,
    )


def collected(script: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``python script *args`` under callgrind (counting off until the script calls
    :func:`instrument`) and return the instructions it collected."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit(f"{script} needs valgrind (e.g. apt install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            script,
            *args,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, env=None if env is None else {**env}
        )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
