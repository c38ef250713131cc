"""Start time of ``agent-runtime up`` (issue 17, deliverable 5).

    .venv/bin/python benchmarks/startup.py [--runs 3] [--config configs/default.yaml] [--imports]

Each run spawns ``python -m agent_runtime up --config C`` (the embedded server, one Redis user
per agent type, as a user runs it) in a private runtime home (``AGENT_RUNTIME_HOME``, so the
benchmark never meets another ``up``), times spawn -> the ``workers ready`` line ``up`` prints
once every worker's heartbeat names its pid (and, before it, the first line: the server up
and its users created, before any worker is spawned), then reads each worker process's idle RSS
(``/proc/PID/status`` VmRSS) and the CPU seconds it used to get there (``/proc/PID/stat``
utime + stime: moved far less than the wall time by other jobs on the machine), the CPU of
the workers' own child processes (the executors' tool forkserver) and of ``up`` itself, sends
SIGTERM and times the clean stop. The runs share one home: the first one also creates the keys
(signing, approval, ACL passwords), as a first ``up`` does. Best of N (the machine is shared):
the 1-minute load average is printed beside each run.

Bytecode: ``up`` runs with Python's default (``.pyc`` files written and reused), as on a
user's machine, even where the calling environment sets ``PYTHONDONTWRITEBYTECODE`` (then
every worker compiled the whole of ``agent_runtime`` from source at every start: 0.3 s of CPU
per worker, docs/benchmarks.md); ``--no-bytecode`` keeps the variable as it is.

``--imports``: ``python -X importtime`` of what one worker imports (the CLI, the config with
every agent class, the worker's composition root), top offenders by cumulative time.

``--instructions AGENT``: the instructions one ``agent-runtime worker AGENT`` executes from its
start to its ``worker_started`` line and its stop (valgrind callgrind, bytecode cache warm,
against an embedded server of its own): a start-up figure immune to the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "workers ready"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Worker:
    agent: str
    slot: str
    pid: int
    rss_kb: int
    cpu_s: float
    children_cpu_s: float  # its child processes' (the executors' tool forkserver)


@dataclass
class Run:
    load: float
    server_s: float  # the first line ("redis: ..."): server started, users created
    ready_s: float
    up_cpu_s: float  # CPU of the `up` process itself up to the ready line
    stop_s: float
    workers: list[Worker]

    @property
    def rss_mb(self) -> float:
        return sum(w.rss_kb for w in self.workers) / 1024

    @property
    def cpu_s(self) -> float:
        return sum(w.cpu_s for w in self.workers)

    @property
    def children_cpu_s(self) -> float:
        return sum(w.children_cpu_s for w in self.workers)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def children_cpu_s(pid: int) -> float:
    """CPU of the live processes whose parent is ``pid`` (and of theirs)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            child = int(stat.parent.name)
            total += cpu_s(child) + children_cpu_s(child)
    return total


def one(config: str, home: Path, timeout: float, bytecode: bool) -> Run:
    env = {**os.environ, "AGENT_RUNTIME_HOME": str(home)}
    env.pop("AGENT_RUNTIME_REDIS_URL", None)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    load = os.getloadavg()[0]
    log = (home / "up.log").open("ab")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "up", "--config", config],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    timer = threading.Timer(timeout, proc.send_signal, (signal.SIGTERM,))
    timer.start()
    rows: list[tuple[str, str, int]] = []
    ready_s = server_s = up_cpu = 0.0
    try:
        for line in proc.stdout:
            server_s = server_s or time.monotonic() - start
            cells = line.split()
            if len(cells) >= 3 and cells[2].isdigit():  # AGENT SLOT PID ... (the table)
                rows.append((cells[0], cells[1], int(cells[2])))
            if line.strip() == READY:
                ready_s = time.monotonic() - start
                up_cpu = cpu_s(proc.pid)
                break
        else:
            raise SystemExit(f"'up' exited ({proc.wait()}) before '{READY}': see {home}/up.log")
    finally:
        timer.cancel()
    time.sleep(0.5)  # idle: the first heartbeat and group checks are done
    workers = [
        Worker(a, s, pid, rss_kb(pid), cpu_s(pid), children_cpu_s(pid)) for a, s, pid in rows
    ]
    stop = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for _ in proc.stdout:  # "workers stopped", "embedded server stopped"
        pass
    code = proc.wait()
    log.close()
    if code != 0:
        raise SystemExit(f"'up' exited {code} after SIGTERM: see {home}/up.log")
    return Run(load, server_s, ready_s, up_cpu, time.monotonic() - stop, workers)


def imports(config: str, top: int) -> None:
    """The top import-time offenders of one worker (bytecode cache on, as for ``up``)."""
    heavy = (
        "anthropic",
        "openai",
        "fastapi",
        "uvicorn",
        "starlette",
        "rich",
        "cryptography.hazmat",
    )
    code = (
        "import agent_runtime.cli as c; c.build_cli().get_command(None, 'worker')\n"
        "from agent_runtime.config.validation import load_valid\n"
        f"p = load_valid({config!r}, environment_for=None)\n"
        "import agent_runtime.worker.build, sys\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stderr
    rows = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((int(m[2]), int(m[1]), len(m[3]) // 2, m[4]))
    total = sum(cum for cum, _self, depth, _name in rows if depth == 0)
    print(f"\nimports of one worker: {total / 1e6:.2f} s cumulative (python -X importtime)")
    print(f"{'cumulative ms':>14} {'self ms':>8}  module")
    for cum, own, depth, name in sorted(rows, reverse=True)[:top]:
        print(f"{cum / 1000:14.1f} {own / 1000:8.1f}  {'  ' * depth}{name}")
    loaded = done.stdout.strip()  # in sys.modules (a failed import attempt is listed above)
    print(f"heavy packages imported: {loaded.replace(',', ', ') or 'none'}")


def instructions(config: str, agent: str) -> int:
    """Instructions of one worker's start and stop (callgrind), after one warm-up start."""
    sys.path.insert(0, str(ROOT))
    from agent_runtime.approval import generate_pair
    from agent_runtime.signing import KEYS_FILE_ENV, ensure_keyring
    from agent_runtime.transport.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="ar-startup-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"AGENT_RUNTIME_HOME": tmp, KEYS_FILE_ENV: str(Path(tmp, "signing-keys"))})
        env.update(generate_pair())  # the approval keys (executor, safety checker), as 'up' does
        env.pop("AGENT_RUNTIME_REDIS_URL", None)
        ensure_keyring(env)
        server = EmbeddedServer(Path(tmp) / "data").start()
        argv = [sys.executable, "-m", "agent_runtime", "worker", agent, "--config", config]
        argv += ["--redis-url", server.url]
        callgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        try:
            for prefix in ([], callgrind):
                proc = subprocess.Popen(
                    prefix + argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
                )
                assert proc.stderr is not None
                for line in proc.stderr:
                    if "worker_started" in line:
                        break
                proc.send_signal(signal.SIGTERM)
                rest = proc.stderr.read()
                proc.wait()
        finally:
            server.stop()
    found = re.search(r"Collected : (\d+)", rest)
    if found is None:
        raise SystemExit(f"no callgrind total in the worker's output:\n{rest[-2000:]}")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--imports", action="store_true", help="python -X importtime offenders")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--instructions",
        metavar="AGENT",
        help="only count one AGENT worker's start-up instructions (valgrind callgrind)",
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE from the environment (default: Python's default)",
    )
    opts = parser.parse_args()
    if opts.instructions:
        count = instructions(opts.config, opts.instructions)
        print(f"worker {opts.instructions}: {count:,} instructions from start to ready and stop")
        return
    cache = "off (PYTHONDONTWRITEBYTECODE)" if opts.no_bytecode else "on"
    print(
        f"agent-runtime up --config {opts.config}: {os.cpu_count()} CPUs, {opts.runs} runs, "
        f"bytecode cache {cache}"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="ar-startup-") as tmp:
        for i in range(opts.runs):
            run = one(opts.config, Path(tmp), opts.timeout, not opts.no_bytecode)
            runs.append(run)
            print(
                f"run {i + 1}: ready {run.ready_s:.2f} s  (load {run.load:.2f})  "
                f"server up {run.server_s:.2f} s  "
                f"stop {run.stop_s:.2f} s  workers {len(run.workers)}  "
                f"RSS {run.rss_mb:.1f} MB  worker CPU {run.cpu_s:.2f} s  "
                f"up CPU {run.up_cpu_s:.2f} s  workers' children CPU {run.children_cpu_s:.2f} s"
            )
    if not runs:  # --runs 0: only --imports
        if opts.imports:
            imports(opts.config, opts.top)
        return
    best = min(runs, key=lambda r: r.ready_s)
    print(f"\nbest of {len(runs)}: ready {best.ready_s:.2f} s (load {best.load:.2f})")
    print(f"{'agent':<16}{'slot':>5}{'pid':>8}{'RSS MB':>8}{'CPU s':>7}{'children':>9}")
    for w in best.workers:
        print(
            f"{w.agent:<16}{w.slot:>5}{w.pid:>8}{w.rss_kb / 1024:8.1f}{w.cpu_s:7.2f}"
            f"{w.children_cpu_s:9.2f}"
        )
    print(f"{'total':<29}{best.rss_mb:8.1f}{best.cpu_s:7.2f}{best.children_cpu_s:9.2f}")
    if opts.imports:
        imports(opts.config, opts.top)


if __name__ == "__main__":
    main()
