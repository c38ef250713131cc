"""The probe state (agent_runtime/observability/probes.py) and the metrics port's paths, with a
controlled clock; readiness checks against the session's real server."""

from __future__ import annotations

import contextlib
import io
import socket
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent_runtime.errors import ConfigError
from agent_runtime.observability.metrics import Metrics
from agent_runtime.observability.probes import Probes, make_app, serve
from agent_runtime.transport.connect import connect
from agent_runtime.transport.inspect import RuntimeReader


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(app: Any, path: str) -> tuple[str, bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    body: Iterable[bytes] = app(environ, start_response)
    return seen[0], b"".join(body)


def probes(clock: Clock) -> Probes:
    return Probes("echo", "echo", ["p:inbox:echo"], stale_after=30, interval=2, clock=clock)


def test_liveness_follows_the_loop_stamp_only() -> None:
    clock = Clock()
    p = probes(clock)
    assert p.liveness()[0]  # alive from creation (start-up)
    clock.now += 31
    ok, reason = p.liveness()
    assert not ok and "event loop stalled" in reason
    p.beat = clock.now
    assert p.liveness() == (True, "ok")


def test_readiness_needs_a_fresh_successful_check_and_not_draining() -> None:
    clock = Clock()
    p = probes(clock)
    assert p.readiness() == (False, "starting: Redis not checked yet")
    p.ready_ok, p.ready_at = True, clock.now
    assert p.readiness() == (True, "ok")
    clock.now += 10  # no check for 10 s with a 2 s interval: stale
    assert not p.readiness()[0]
    p.ready_at = clock.now
    p.draining = True
    assert p.readiness() == (False, "draining: stopping after SIGTERM")


def test_paths_of_the_metrics_port() -> None:
    clock = Clock()
    p = probes(clock)
    metrics = Metrics(CollectorRegistry())
    app = make_app(metrics.registry, p)
    assert get(app, "/healthz") == ("200 OK", b"ok\n")
    status, body = get(app, "/readyz")
    assert status.startswith("503") and b"not checked yet" in body
    status, body = get(app, "/metrics")
    assert status.startswith("200") and b"process_resident_memory_bytes" in body
    assert b"python_gc_objects_collected_total" in body and b"python_info" in body
    for path in ("/", "/health", "/metrics/x", "/healthz/"):
        assert get(app, path)[0] == "404 Not Found"
    assert get(make_app(metrics.registry, None), "/healthz")[0] == "404 Not Found"


def test_bad_probe_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_LIVENESS_STALE_SECONDS", "soon")
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_LIVENESS_STALE_SECONDS='soon'"):
        Probes.from_env("echo", "echo", [])
    monkeypatch.setenv("AGENT_RUNTIME_LIVENESS_STALE_SECONDS", "0")
    with pytest.raises(ConfigError):
        Probes.from_env("echo", "echo", [])


@pytest.mark.integration
@pytest.mark.anyio
async def test_readiness_check_against_a_real_server(redis_url: str, prefix: str) -> None:
    connection = connect(redis_url)
    reader = RuntimeReader(connection.redis)
    stream = f"{prefix}:inbox:echo"
    p = Probes("echo", "echo", [stream])
    try:
        ok, reason = await p.check(reader)
        assert not ok and reason == f"consumer group 'echo' missing on {stream}"
        await connection.redis.xgroup_create(stream, "echo", id="0", mkstream=True)
        assert await p.check(reader) == (True, "ok")
    finally:
        await connection.redis.aclose()
    unreachable = connect("redis://127.0.0.1:1/0")
    try:
        ok, reason = await p.check(RuntimeReader(unreachable.redis))
        assert not ok and (reason.startswith("Redis unreachable") or "did not answer" in reason)
    finally:
        await unreachable.redis.aclose()


@settings(max_examples=200)
@given(path=st.text(max_size=200), method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "X"]))
def test_any_path_gets_a_plain_answer(path: str, method: str) -> None:
    """Hostile request paths: an answer for every one (200/503 for the probes, 404 else)."""
    clock = Clock()
    app = make_app(CollectorRegistry(), probes(clock))
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method}
    setup_testing_defaults(environ)
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    expected = {"/healthz": "200 OK", "/readyz": "503 Service Unavailable"}
    if path == "/metrics":
        assert seen[0].startswith("200")
    else:
        assert seen == [expected.get(path, "404 Not Found")]
        assert body if method != "HEAD" or path not in expected else body == b""


@settings(max_examples=50, deadline=None)
@given(junk=st.binary(max_size=4096))
def test_the_server_survives_arbitrary_bytes(junk: bytes, http_server: int) -> None:
    """Whatever a client sends, the probe server keeps answering the next probe."""
    with socket.create_connection(("127.0.0.1", http_server), timeout=5) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_server}/healthz", timeout=5) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def http_server() -> Iterator[int]:
    server = serve(0, CollectorRegistry(), probes(Clock()), addr="127.0.0.1")
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
