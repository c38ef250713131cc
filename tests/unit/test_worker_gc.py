"""Worker processes tune the garbage collector (start-up objects frozen, young generation
collected every 10,000 net allocations); AGENT_RUNTIME_GC_TUNE=0 keeps Python's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = (
    "import gc, json; from agent_runtime.cli.worker import tune_gc; tune_gc(); "
    "print(json.dumps([gc.get_threshold(), gc.get_freeze_count()]))"
)


def probe(**env: str) -> tuple[list[int], int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    threshold, frozen = json.loads(out)
    return threshold, frozen


def test_worker_processes_freeze_start_up_objects_and_raise_the_threshold() -> None:
    threshold, frozen = probe(AGENT_RUNTIME_GC_TUNE="1")
    assert threshold == [10_000, 10, 10]
    assert frozen > 1_000  # modules, config models, ... are out of the collector's view


def test_gc_tune_0_keeps_pythons_defaults() -> None:
    threshold, frozen = probe(AGENT_RUNTIME_GC_TUNE="0")
    assert threshold == [700, 10, 10]
    assert frozen == 0
