"""The container image, built and run: the project's Dockerfile built by podman with no network
(deploy/docker/build_offline.py: an mmdebstrap Debian base imported under the Dockerfile's base
name, wheels from a host wheelhouse; both cached under ~/.cache/agent-runtime-image), then one
container per agent type (`IMAGE NAME` = `agent-runtime worker NAME`, --network host) against a
server the test starts on a loopback port. A request is answered through the containers; the
image's HEALTHCHECK reports healthy inside them; `podman stop` (SIGTERM) of the container that
is handling a slow request loses nothing: the drain finishes it and the request is answered.

Needs root, podman, runc and mmdebstrap (.ci/run installs them), and the network the first time
(Debian mirror, package index) for the cached base and wheelhouse; never during the build.
AGENT_RUNTIME_IMAGE_TEST=0 opts out on a machine without them (CI never sets it)."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent_runtime.signing import SIGNING_KEY_ENV, VERIFY_KEYS_ENV, keys_file, read_secrets
from agent_runtime.testing import wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from tests.e2e.test_probes import status
from tests.fixtures.pipeline import FAST, ROOT, LivePipeline, MakePipeline, echo_sink

pytestmark = [pytest.mark.e2e, pytest.mark.image, pytest.mark.timeout(1800)]

TAG = "localhost/agent-runtime:test"
SLOW_SECONDS = 3.0


def _load_builder() -> ModuleType:
    path = ROOT / "deploy" / "docker" / "build_offline.py"
    spec = importlib.util.spec_from_file_location("build_offline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


@pytest.fixture(scope="module")
def image() -> Iterator[Any]:
    """The image, built once for the module (cached inputs make a rebuild quick)."""
    if os.environ.get("AGENT_RUNTIME_IMAGE_TEST") == "0":
        pytest.skip("AGENT_RUNTIME_IMAGE_TEST=0: the image test is turned off on this machine")
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    assert not missing, f"the image test needs {', '.join(missing)} (.ci/run installs them)"
    assert os.geteuid() == 0, "the image test runs podman as root (as .ci/run does)"
    started = time.monotonic()
    built = builder.build(TAG)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in built.seconds.items())
    print(f"\nimage {TAG} ready in {time.monotonic() - started:.1f}s ({steps})")
    yield built


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, int]]:
    """The test's own server, also on a loopback TCP port the host-network containers reach."""
    port = _free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    server = EmbeddedServer(tmp_path / "redis", persistent=False, extra_args=args).start()
    yield server, port
    server.stop()


class Containers:
    """Worker containers of one test: `podman run -d IMAGE NAME` with the test's pipeline."""

    def __init__(self, built: Any, pipe: LivePipeline, redis_port: int) -> None:
        # the pipeline's signing keys, given as an operator gives them to a container: in the
        # environment (named on podman's command line, the values from podman's environment,
        # so no secret is in an argv or the log)
        signing, *verify = read_secrets(keys_file(pipe.env))
        self.pm = copy.copy(built.podman)
        self.pm.env = {
            **built.podman.env,
            SIGNING_KEY_ENV: signing.decode(),
            VERIFY_KEYS_ENV: ",".join(v.decode() for v in verify),
        }
        self.tag = built.tag
        self.pipe = pipe
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.label = f"io.agent-runtime.test={uuid.uuid4().hex}"
        # the pipeline file and the test agents, readable by the image's user (uid 10001)
        self.config_dir = pipe.root / "image-config"
        self.config_dir.mkdir(mode=0o755)
        shutil.copy(pipe.config_path, self.config_dir / "pipeline.yaml")
        (self.config_dir / "pipeline.yaml").chmod(0o644)
        self.ports: dict[str, int] = {}

    def run(self, agent: str, name: str) -> str:
        """A worker container for ``agent`` (hostname ``name``: the consumer name's middle)."""
        port = _free_port()
        tests = ROOT / "tests"
        self.pm(
            "run",
            "--detach",
            "--name",
            name,
            "--hostname",
            name,
            "--label",
            self.label,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--volume",
            f"{self.config_dir}:/config:ro",
            "--volume",
            f"{tests}:/plugins/tests:ro",
            "--env",
            "AGENT_RUNTIME_CONFIG=/config/pipeline.yaml",
            "--env",
            f"AGENT_RUNTIME_REDIS_URL={self.redis_url}",
            "--env",
            f"AGENT_RUNTIME_METRICS_PORT={port}",
            "--env",
            "AGENT_RUNTIME_READINESS_INTERVAL=0.5",
            "--env",
            "PYTHONPATH=/plugins",
            "--env",
            SIGNING_KEY_ENV,
            "--env",
            VERIFY_KEYS_ENV,
            self.tag,
            agent,
        )
        self.ports[name] = port
        return name

    def wait_ready(self, name: str) -> None:
        port = self.ports[name]
        wait_until(
            lambda: status(port, "/readyz") == 200 or not self.running(name),
            120,
            interval=0.2,
            message=f"{name} ready",
        )
        assert self.running(name), self.logs(name)

    def running(self, name: str) -> bool:
        state = self.pm("inspect", "--format", "{{.State.Status}}", name, check=False, quiet=True)
        return state.stdout.strip() == "running"

    def exit_code(self, name: str) -> int:
        out = self.pm("inspect", "--format", "{{.State.ExitCode}}", name, quiet=True).stdout
        return int(out.strip())

    def logs(self, name: str) -> str:
        result = self.pm("logs", name, check=False, quiet=True)
        return str(result.stdout + result.stderr)[-4000:]

    def remove_all(self) -> None:
        self.pm("rm", "--force", "--filter", f"label={self.label}", check=False, quiet=True)


@pytest.fixture
def containers(
    image: Any, make_pipeline: MakePipeline, tcp_server: tuple[EmbeddedServer, int]
) -> Iterator[Containers]:
    server, port = tcp_server
    pipe = make_pipeline(
        echo_sink({"sleep_seconds": SLOW_SECONDS}),
        worker={**FAST, "drain_timeout": 60, "reclaim_idle": 120},
        url=server.url,
    )
    made = Containers(image, pipe, port)
    yield made
    made.remove_all()


def test_image_answers_reports_healthy_and_drains_on_sigterm(containers: Containers) -> None:
    p = containers.pipe
    echo = containers.run("echo", "echo-a")
    sink = containers.run("sink", "sink-a")
    for name in (echo, sink):
        containers.wait_ready(name)

    # the image's HEALTHCHECK (GET /healthz over bash /dev/tcp) inside the container
    for name in (echo, sink):
        check = containers.pm("healthcheck", "run", name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr + containers.logs(name)
        ready = containers.pm("exec", name, "agent-runtime-healthcheck", "/readyz", check=False)
        assert ready.returncode == 0 and "200" in ready.stdout, ready.stdout + ready.stderr

    # a request answered through the containers
    first = p.publish("through the image")
    wait_until(lambda: p.replies(first), 60, message="a reply through the containers")
    assert p.replies(first)[0]["text"] == "THROUGH THE IMAGE"

    # a slow request in flight in echo-a, then SIGTERM (podman stop): the drain finishes it
    slow = p.publish("in flight at the stop")
    consumer = f"echo-{echo}-0"  # NAME-HOSTNAME-SLOT: the container's hostname
    wait_until(
        lambda: any(e["consumer"].decode() == consumer for e in p.pending("echo")),
        30,
        message="the slow request held by echo-a",
    )
    assert not p.replies(slow)
    containers.pm("stop", "--time", "90", echo)  # SIGTERM, SIGKILL only after 90 s
    assert containers.exit_code(echo) == 0, containers.logs(echo)
    wait_until(lambda: p.replies(slow), 60, message="the in-flight request answered")
    assert p.replies(slow) == [{"text": "IN FLIGHT AT THE STOP"}]
    assert p.pending("echo") == [] and p.dead_letters("echo") == []
    assert "worker_stopped" in containers.logs(echo)
