"""/healthz and /readyz of real worker processes through a Redis outage: the server is stopped
for 10 s under `agent-runtime up` and under the Compose-equivalent command (each worker started
alone as `agent-runtime worker NAME`). Liveness stays 200 for every worker and no worker is
restarted; readiness turns 503 while Redis is away and back to 200 when it returns; the
container HEALTHCHECK script (deploy/docker/healthcheck.sh) says the same over HTTP.

The server is the test's own (persistent, so the groups survive its restart): the session's
server is shared with every other test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from tests.fixtures.pipeline import ROOT, LivePipeline, MakePipeline

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 10.0
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.sh"
PROBE_ENV = {"AGENT_RUNTIME_READINESS_INTERVAL": "0.2", "AGENT_RUNTIME_METRICS_INTERVAL": "0.5"}


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path / "redis", persistent=True).start()
    yield server
    server.stop()


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (``up`` gives worker i base+i)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count < 65536 and all(_free(base + i) for i in range(1, count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def status(port: int, path: str) -> int | None:
    """The HTTP status of GET path, None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start_time(port: int) -> float:
    """process_start_time_seconds of the process behind ``port``: changes on a restart."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_start_time_seconds":
                return float(sample.value)
    raise AssertionError("no process_start_time_seconds on /metrics")


def healthcheck(port: int, path: str = "/healthz") -> int:
    """Exit status of the image's HEALTHCHECK script against ``port``."""
    env = {**os.environ, "AGENT_RUNTIME_METRICS_PORT": str(port)}
    argv = ["bash", str(HEALTHCHECK), path]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


def all_status(ports: list[int], path: str, code: int) -> bool:
    return all(status(port, path) == code for port in ports)


def ride_out_outage(server: EmbeddedServer, ports: list[int]) -> None:
    """Stop the server for OUTAGE_SECONDS and restart it, checking every worker's probes all
    along: /healthz 200 throughout, /readyz 503 during and 200 after, no restart."""
    started = {port: start_time(port) for port in ports}
    wait_until(lambda: all_status(ports, "/readyz", 200), 60, message="every worker ready")
    assert healthcheck(ports[0]) == 0 and healthcheck(ports[0], "/readyz") == 0

    server.stop()
    down_until = time.monotonic() + OUTAGE_SECONDS
    wait_until(lambda: all_status(ports, "/readyz", 503), 15, message="readyz 503 for all")
    assert healthcheck(ports[0], "/readyz") == 1  # the script reports the outage
    checks = 0
    while time.monotonic() < down_until:  # the outage lasts its 10 s, probed all along
        for port in ports:
            assert status(port, "/healthz") == 200, f"liveness of :{port} failed in the outage"
        checks += 1
    assert healthcheck(ports[0]) == 0  # the container stays healthy: no restart

    server.start()
    wait_until(lambda: all_status(ports, "/readyz", 200), 30, message="readyz 200 again")
    assert all_status(ports, "/healthz", 200)
    assert {port: start_time(port) for port in ports} == started, "a worker was restarted"
    assert checks > len(ports)


def test_probe_paths_and_process_collectors(make_pipeline: MakePipeline) -> None:
    p = make_pipeline()
    port = free_ports(1)
    p.start("echo", AGENT_RUNTIME_METRICS_PORT=str(port), **PROBE_ENV)
    wait_until(lambda: status(port, "/readyz") == 200, 30, message="ready")
    assert status(port, "/healthz") == 200
    assert status(port, "/") == 404 and status(port, "/metricsx") == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        names = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert {
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "python_gc_objects_collected",
        "python_info",
        "agent_runtime_messages_handled",
    } <= names
    # draining after SIGTERM: not ready any more (the process may be gone already)
    p.workers[("echo", "0")].signal(signal.SIGTERM)
    wait_until(lambda: status(port, "/readyz") in (503, None), 30, message="not ready on drain")


def test_redis_outage_compose_equivalent(
    make_pipeline: MakePipeline, own_server: EmbeddedServer
) -> None:
    """Each worker its own `agent-runtime worker NAME` process, as Compose runs them."""
    p = make_pipeline(url=own_server.url)
    base = free_ports(2)
    ports = [base, base + 1]
    for agent, port in zip(("echo", "sink"), ports, strict=True):
        p.start(agent, AGENT_RUNTIME_METRICS_PORT=str(port), **PROBE_ENV)
    ride_out_outage(own_server, ports)
    assert all(proc.alive() for proc in p.workers.values())
    _answered(p)


def test_redis_outage_under_up(make_pipeline: MakePipeline, own_server: EmbeddedServer) -> None:
    """Every worker under `agent-runtime up` (the supervisor would restart a dead one)."""
    p = make_pipeline(url=own_server.url)
    base = free_ports(2)
    ports = [base, base + 1]
    env = {**p.env, "AGENT_RUNTIME_METRICS_PORT": str(base), **PROBE_ENV}
    argv = [sys.executable, "-m", "agent_runtime", "up", "--config", str(p.config_path)]
    argv += ["--redis-url", own_server.url, "--log-dir", str(p.root / "up-logs")]
    with open(p.root / "up.log", "wb") as log:
        up = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: all_status(ports, "/healthz", 200) or up.poll() is not None,
            90,
            message="workers under up",
        )
        assert up.poll() is None, (p.root / "up.log").read_text()
        ride_out_outage(own_server, ports)
        assert up.poll() is None
        _answered(p)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0, (p.root / "up.log").read_text()


def _answered(p: LivePipeline) -> None:
    """After the outage the pipeline still answers (the workers' connections came back)."""
    message = p.publish("after the outage")
    wait_until(lambda: p.replies(message), 60, message="a reply after the outage")
