"""A supervised worker dies with its supervisor: it asks for PR_SET_PDEATHSIG itself
(``die_with_supervisor``, no ``preexec_fn``), and exits at once when the supervisor it was
started by is already gone. Real processes, no server; synchronised on pipes, not sleeps."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent_runtime.worker.supervisor import SUPERVISOR_PID_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl: Linux")

# the worker's side: ask, say so, then wait for a signal; SIGTERM is reported on stdout
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from agent_runtime.worker.supervisor import SUPERVISOR_PID_ENV, die_with_supervisor
    def on_term(signum, frame):
        print("sigterm", flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    die_with_supervisor()
    print("armed", SUPERVISOR_PID_ENV in os.environ, flush=True)
    signal.pause()
    """
)

# the supervisor's side: start the child with its pid in the environment (as Supervisor._spawn
# does: start_new_session, close_fds, no preexec_fn), print the child's pid, wait forever
PARENT = textwrap.dedent(
    f"""
    import os, signal, subprocess, sys
    env = {{**os.environ, {SUPERVISOR_PID_ENV!r}: str(os.getpid())}}
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1]], env=env, start_new_session=True, close_fds=True
    )
    print(child.pid, flush=True)
    signal.pause()
    """
)


def test_a_worker_gets_sigterm_when_its_supervisor_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid = 0
    try:
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().split() == ["armed", "False"]  # the variable is gone
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        # the child shares the pipe: its report, then EOF once it exited
        out, _ = parent.communicate(timeout=30)
        child_pid = 0  # ended: its pipe closed
    finally:
        if parent.poll() is None:
            parent.kill()
        with contextlib.suppress(ProcessLookupError):  # a failed run leaves no process behind
            if child_pid:
                os.kill(child_pid, signal.SIGKILL)
        parent.stdout.close()
    assert out.split() == ["sigterm"]  # the child ended (EOF) after its SIGTERM handler ran


def test_a_worker_whose_supervisor_is_already_gone_exits_at_once() -> None:
    code = "from agent_runtime.worker.supervisor import die_with_supervisor as d; d(); print('on')"
    env = {**os.environ, SUPERVISOR_PID_ENV: "1"}  # not our parent: that supervisor died
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "its supervisor (pid 1) is gone" in done.stderr


def test_a_worker_started_by_its_supervisor_or_by_hand_runs_on() -> None:
    code = "from agent_runtime.worker.supervisor import die_with_supervisor as d; d(); print('on')"
    for extra in ({SUPERVISOR_PID_ENV: str(os.getpid())}, {}):
        env = {k: v for k, v in os.environ.items() if k != SUPERVISOR_PID_ENV} | extra
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (0, "on\n"), done.stderr
