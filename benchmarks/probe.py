"""CPU cost of one health probe (issue 16: a probe must cost under 10 ms of CPU).

One ``agent-runtime worker`` process (no-op agent) with its metrics port on an embedded server;
then, in the same run:

* worker side: N sequential GETs of /healthz, /readyz and /metrics; the worker's CPU time
  (user + system, /proc) per request, minus its idle CPU over a window as long (the raw
  baseline, measured in the same run);
* probe side: the CPU of the probe command a container HEALTHCHECK runs, per run (children's
  rusage): ``deploy/docker/healthcheck.sh`` (bash /dev/tcp, the image's HEALTHCHECK), a
  ``python3 -c`` urllib one-liner, and the command it replaces, ``agent-runtime health``
  (the full CLI; fewer runs).

Kubernetes httpGet probes run in the kubelet: only the worker side applies to them.

    .venv/bin/python benchmarks/probe.py [--requests 300] [--cli-runs 5]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from benchmarks.single_hop import cpu_seconds  # noqa: E402

PYTHON_PROBE = (
    "import sys,urllib.request as u;"
    "sys.exit(0 if u.urlopen('http://127.0.0.1:%d/healthz',timeout=5).status==200 else 1)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def worker_side(pid: int, port: int, path: str, n: int) -> tuple[float, float]:
    """(worker CPU ms per request, wall seconds of the n requests)."""
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for _ in range(n):
        assert get(port, path) == 200, path
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    assert cpu0 is not None and cpu1 is not None
    return (cpu1 - cpu0) / n * 1e3, t1 - t0


def idle_cpu_ms(pid: int, seconds: float) -> float:
    """The worker's CPU over an idle window of ``seconds`` (heartbeats, loop ticks, collector)."""
    cpu0 = cpu_seconds(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    cpu1 = cpu_seconds(pid)
    assert cpu0 is not None and cpu1 is not None
    return (cpu1 - cpu0) * 1e3


def command_cpu_ms(argv: list[str], env: dict[str, str], n: int) -> tuple[float, float]:
    """(CPU ms per run of ``argv``, wall ms per run): children's rusage around n runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
    wall = (time.perf_counter() - t0) / n * 1e3
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / n * 1e3, wall


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--cli-runs", type=int, default=5)
    args = parser.parse_args()
    n = args.requests

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pipeline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "key_prefix": "probe",
                    "allowed_modules": ["benchmarks"],
                    "agents": {"noop": {"class": "benchmarks.agents:Noop"}},
                }
            )
        )
        server = EmbeddedServer(Path(tmp) / "redis", persistent=False).start()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AGENT_RUNTIME_LOG_LEVEL": "warning",
            "AGENT_RUNTIME_METRICS_PORT": str(port),
        }
        argv = [sys.executable, "-m", "agent_runtime", "worker", "noop"]
        argv += ["--config", str(config), "--redis-url", server.url]
        worker = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:

            def ready() -> bool:
                try:
                    return get(port, "/readyz") == 200
                except OSError:
                    return False

            wait(ready, 60, "the worker's /readyz")
            for path in ("/healthz", "/readyz", "/metrics"):  # warm-up
                worker_side(worker.pid, port, path, 20)
            rows = []
            for path in ("/healthz", "/readyz", "/metrics"):
                per_request, wall = worker_side(worker.pid, port, path, n)
                idle = idle_cpu_ms(worker.pid, wall) / n  # the same wall time, no requests
                rows.append((f"worker: GET {path}", per_request, idle, per_request - idle))
            script = ["bash", str(ROOT / "deploy" / "docker" / "healthcheck.sh")]
            # the system's interpreter, as in the image (a version manager's shim costs more)
            python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
            probe_rows = [
                ("probe: healthcheck.sh (bash /dev/tcp)", *command_cpu_ms(script, env, n // 5)),
                (
                    "probe: python3 -I -c urllib one-liner",
                    *command_cpu_ms([python, "-I", "-c", PYTHON_PROBE % port], env, n // 20),
                ),
            ]
            cli = [sys.executable, "-m", "agent_runtime", "health", "--agent", "noop"]
            cli += ["--consumer", f"noop-{socket.gethostname()}-0"]
            cli += ["--config", str(config), "--redis-url", server.url]
            probe_rows.append(
                ("probe: agent-runtime health (old)", *command_cpu_ms(cli, env, args.cli_runs))
            )
        finally:
            worker.terminate()
            worker.wait(30)
            server.stop()

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, ", end="")
    print(f"Python {platform.python_version()}, {n} requests per worker row, ", end="")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'':44} {'CPU ms':>9} {'idle ms':>9} {'net ms':>9}")
    for name, cpu, idle, net in rows:
        print(f"{name:44} {cpu:9.3f} {idle:9.3f} {net:9.3f}")
    print(f"{'':44} {'CPU ms':>9} {'wall ms':>9}")
    for name, cpu, wall in probe_rows:
        print(f"{name:44} {cpu:9.2f} {wall:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
