"""Worker processes tune the garbage collector (start-up objects frozen, young generation
collected every 10,000 net allocations); AGENT_RUNTIME_GC_TUNE=0 keeps Python's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = (
    "import gc, json; default = gc.get_threshold(); "
    "from agent_runtime.cli.worker import tune_gc; tune_gc(); "
    "print(json.dumps([gc.get_threshold(), gc.get_freeze_count(), default]))"
)


def probe(**env: str) -> tuple[list[int], int, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    threshold, frozen, default = json.loads(out)
    return threshold, frozen, default


def test_worker_processes_freeze_start_up_objects_and_raise_the_threshold() -> None:
    threshold, frozen, _ = probe(AGENT_RUNTIME_GC_TUNE="1")
    assert threshold == [10_000, 10, 10]
    assert frozen > 1_000  # modules, config models, ... are out of the collector's view


def test_gc_tune_0_keeps_pythons_defaults() -> None:
    threshold, frozen, default = probe(AGENT_RUNTIME_GC_TUNE="0")
    assert threshold == default
    assert frozen == 0
