"""``agent-runtime run`` as a user runs it: a child process that starts every agent as its own
process, prints progress on stderr and the Report JSON on stdout, and exits 0/1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_runtime.transport.embedded import EmbeddedServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime", "run", *args, "--json", "--timeout", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_run_prints_a_report_whose_steps_really_ran(
    redis_server: EmbeddedServer, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    # no approval keys given: run keeps a generated pair in the runtime home
    env = {k: v for k, v in subprocess_env.items() if not k.startswith("AGENT_RUNTIME_APPROVAL")}
    env["AGENT_RUNTIME_HOME"] = str(tmp_path)
    done = run_cli(
        [
            "list files in configs and read configs/policy.yaml and run echo hi "
            "then count words in configs/policy.yaml",
            "--redis-url",
            redis_server.url,
        ],
        env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "succeeded"
    steps = {s["id"]: s for s in report["steps"]}
    assert "policy.yaml" in [e["name"] for e in steps["s1"]["output"]]
    assert steps["s2"]["output"] == (ROOT / "configs" / "policy.yaml").read_text()
    assert steps["s3"]["output"]["stdout"] == "hi\n"
    assert steps["s4"]["depends_on"] == ["s1", "s2", "s3"]
    assert steps["s4"]["output"]["words"] == len((ROOT / "configs/policy.yaml").read_text().split())
    for agent in ("intent_parser", "planner", "safety_checker", "router", "executor", "reporter"):
        assert agent in done.stderr  # one progress line per hop
    pair = tmp_path / "approval-keys.json"
    assert pair.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(pair.read_text())) == {
        "AGENT_RUNTIME_APPROVAL_PRIVATE_KEY",
        "AGENT_RUNTIME_APPROVAL_PUBLIC_KEY",
    }


def test_run_exits_non_zero_when_the_policy_rejects(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**subprocess_env, "AGENT_RUNTIME_HOME": str(tmp_path)}  # run's own embedded server
    done = run_cli(["run date and run cat configs/policy.yaml"], env)
    assert done.returncode == 1, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "rejected"
    assert all(s["status"] == "not_run" for s in report["steps"])
    assert "embedded redis" in done.stderr
