"""The plug-in example end to end, as a user runs it from the repository root with the installed
console script: ``agent-runtime up`` (embedded server, real worker processes) in one process,
``agent-runtime send --wait --json`` in another; Ctrl-C (SIGINT to the process group) drains
the workers before the server stops, and clears the state."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import STATE_FILE

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "agent-runtime")
EXAMPLE = "configs/examples/text_stats.yaml"
TEXT = "Redis streams carry messages. Workers read redis streams."


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: no PYTHONPATH (the console script does not see the cwd), no Redis URL,
    a runtime dir of its own so the embedded server and its state file are private."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "AGENT_RUNTIME_REDIS_URL", "AGENT_RUNTIME_CONFIG")
    }
    env["AGENT_RUNTIME_HOME"] = str(home)
    return env


def test_up_and_send(tmp_path: Path) -> None:
    home = tmp_path / "h"
    env = user_env(home)
    out = tmp_path / "up.out"
    with out.open("w") as sink:
        up = subprocess.Popen(
            [CLI, "up", "--config", EXAMPLE, "--log-dir", str(tmp_path / "logs")],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a shell job
        )
    try:
        wait_until(
            lambda: "workers ready" in out.read_text() or up.poll() is not None,
            60,
            message="up to report its workers ready",
        )
        text = out.read_text()
        assert "workers ready" in text, text
        assert re.search(r"^redis: unix://\S+ +\(embedded server", text, re.M)
        assert (home / STATE_FILE).exists()
        pids = [int(p) for p in re.findall(r"^(?:counter|summarizer)\s+\d+\s+(\d+)\s", text, re.M)]
        assert len(pids) == 3  # counter x2, summarizer x1, as configured

        sent = subprocess.run(
            [CLI, "send", TEXT, "--wait", "--json", "--timeout", "30", "--config", EXAMPLE],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        reply = json.loads(sent.stdout)
        assert reply["message_type"] == "text_stats.summary"
        assert reply["from_agent"] == "summarizer"
        assert reply["payload"] == {
            "summary": "8 words (6 unique), 2 sentence(s), 57 characters; most frequent: "
            "redis (2), streams (2), carry (1); reading time about 3 s",
            "words": 8,
            "sentences": 2,
            "top_words": ["redis", "streams", "carry"],
            "reading_seconds": 3,
        }
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        code = up.wait(60)
    log = out.read_text()
    assert code == 0, log
    assert "workers stopped" in log and "embedded server stopped" in log
    assert "Traceback" not in log and '"level": "error"' not in log, log  # clean drain
    assert not (home / STATE_FILE).exists()
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
