"""The installed ``agent-runtime`` console script, as a child process, when things go wrong:
an unreachable server (stopped, wrong port, wrong password, bad scheme) is one line on stderr
naming the URL (password masked), no traceback, the exit status of the README's table; an
invalid config or request text is refused before anything starts; ``run`` exits 3 when no
reply comes in time and accepts any terminal reply; ``send --wait`` renders a Report as
``run`` does and exits non-zero when the request did not succeed."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
import yaml

from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.supervisor import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "agent-runtime")
FAST = {"block_ms": 100, "heartbeat_interval": 0.2, "drain_timeout": 2}
PASSWORD = "correct-horse-battery-42"
WRONG = "wrong-password-17"
EXIT_NOT_OK, EXIT_USAGE, EXIT_TIMEOUT, EXIT_UNREACHABLE = 1, 2, 3, 4


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single stderr line of a failed command, with the expected exit status."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = lines
    assert line.startswith("agent-runtime: error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def write_config(tmp: Path, prefix: str, agents: dict[str, object], name: str = "p.yaml") -> Path:
    config = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "worker": FAST,
        "agents": agents,
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def echo_sink(tmp: Path, prefix: str, replicas: int = 1) -> Path:
    return write_config(
        tmp,
        prefix,
        {
            "echo": {"class": "tests.fixtures.agents:Echo", "replicas": replicas},
            "sink": {"class": "tests.fixtures.agents:Sink", "replicas": replicas},
        },
    )


@pytest.fixture
def env(tmp_path: Path, subprocess_env: dict[str, str]) -> dict[str, str]:
    """No embedded server recorded in this runtime dir, no Redis URL in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    return {**subprocess_env, "AGENT_RUNTIME_HOME": str(home)}


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server of this module's own with a password (the session server stays open)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("locked"), persistent=False).start()
    with redis.Redis(unix_socket_path=str(server.socket_path)) as admin:
        admin.config_set("requirepass", PASSWORD)
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ unreachable servers
def test_a_stopped_server_is_one_line_exit_4(
    tmp_path: Path, prefix: str, env: dict[str, str]
) -> None:
    server = EmbeddedServer(tmp_path / "gone", persistent=False).start()
    server.stop()
    config = echo_sink(tmp_path, prefix)
    result = cli("send", "hello", "--wait", "-c", str(config), "--redis-url", server.url, env=env)
    one_line(result, EXIT_UNREACHABLE, server.url, "is the server running?")


def test_a_wrong_port_is_one_line_exit_4(tmp_path: Path, prefix: str, env: dict[str, str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = echo_sink(tmp_path, prefix)
    for command in (["send", "hello", "--wait"], ["status"], ["trace", "0" * 32]):
        result = cli(*command, "-c", str(config), "--redis-url", url, env=env)
        one_line(result, EXIT_UNREACHABLE, url, "connection refused")


def test_a_wrong_password_is_one_line_with_the_password_masked(
    tmp_path: Path, prefix: str, env: dict[str, str], locked_server: EmbeddedServer
) -> None:
    config = echo_sink(tmp_path, prefix)
    socket_path = locked_server.socket_path
    for url in (f"unix://:{WRONG}@{socket_path}", f"unix://{socket_path}?password={WRONG}"):
        result = cli("send", "hello", "-c", str(config), "--redis-url", url, env=env)
        line = one_line(result, EXIT_UNREACHABLE, str(socket_path), "***", "authentication failed")
        assert WRONG not in result.stderr + result.stdout
        assert "password" in line  # the hint says what to check
    right = cli(
        "send",
        "hello",
        "-c",
        str(config),
        "--redis-url",
        f"unix://:{PASSWORD}@{socket_path}",
        env=env,
    )
    assert right.returncode == 0, right.stderr  # the server is fine: the password was wrong
    assert re.fullmatch(r"[0-9a-f-]{36}\n", right.stdout)


def test_run_refuses_a_wrong_password_before_starting_any_worker(
    tmp_path: Path, prefix: str, env: dict[str, str], locked_server: EmbeddedServer
) -> None:
    config = echo_sink(tmp_path, prefix)
    logs = tmp_path / "logs"
    url = f"unix://:{WRONG}@{locked_server.socket_path}"
    result = cli(
        "run", "hello", "-c", str(config), "--redis-url", url, "--log-dir", str(logs), env=env
    )
    one_line(result, EXIT_UNREACHABLE, "authentication failed")
    assert not any(logs.iterdir()), "no worker was started"


def test_a_bad_scheme_is_a_usage_error(tmp_path: Path, prefix: str, env: dict[str, str]) -> None:
    config = echo_sink(tmp_path, prefix)
    for url in ("http://:secret-pw-99@localhost:6379", "localhost:6379"):
        result = cli("send", "hello", "-c", str(config), "--redis-url", url, env=env)
        one_line(result, EXIT_USAGE, "is not a Redis URL", "redis://")
        assert "secret-pw-99" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path, prefix: str, env: dict[str, str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    config = echo_sink(tmp_path, prefix)
    result = cli(
        "status", "-c", str(config), "--redis-url", url, env={**env, "AGENT_RUNTIME_DEBUG": "1"}
    )
    assert result.returncode == EXIT_UNREACHABLE
    assert "Traceback" in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("(is the server running on that host and port?)")
    )


class Listener:
    """A TCP port on loopback that accepts connections and answers each with ``greeting``
    (nothing at all when empty), then keeps it open: a server that is not Redis."""

    def __init__(self, greeting: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.greeting = greeting
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_server_that_never_answers_is_a_timeout_line(
    tmp_path: Path, prefix: str, env: dict[str, str]
) -> None:
    silent = Listener(b"")
    try:
        config = echo_sink(tmp_path, prefix)
        url = f"redis://127.0.0.1:{silent.port}"
        quick = {**env, "AGENT_RUNTIME_CONNECT_TIMEOUT": "0.5"}
        result = cli("status", "-c", str(config), "--redis-url", url, env=quick)
        one_line(result, EXIT_UNREACHABLE, url, "timed out")
    finally:
        silent.close()


def test_a_tls_failure_is_one_line(tmp_path: Path, prefix: str, env: dict[str, str]) -> None:
    plain = Listener(b"-ERR this port does not speak TLS\r\n")
    try:
        config = echo_sink(tmp_path, prefix)
        url = f"rediss://:tls-secret-55@127.0.0.1:{plain.port}"
        result = cli("send", "hello", "-c", str(config), "--redis-url", url, env=env)
        one_line(result, EXIT_UNREACHABLE, f"rediss://***@127.0.0.1:{plain.port}", "TLS")
        assert "tls-secret-55" not in result.stderr
    finally:
        plain.close()


# ------------------------------------------------------------------ refused before starting
def broken_config(tmp: Path, prefix: str) -> tuple[Path, list[str]]:
    """A config with three problems; the ``file:line: key`` each must be reported with."""
    path = write_config(
        tmp,
        prefix,
        {
            "echo": {"class": "tests.fixtures.agents:Echo", "replica": 2},
            "sink": {"class": "tests.fixtures.agents:Sink", "worker": {"concurrency": 0}},
            "intent_parser": {
                "class": "agents.intent_parser:IntentParser",
                "config": {"llm": {"provider": "anthropic", "modle": "x"}},
            },
            "planner": {
                "class": "agents.planner:Planner",
                "config": {"llm": {"provider": "openai"}},
            },
        },
        name="broken.yaml",
    )
    text = path.read_text().splitlines()

    def at(needle: str, key: str) -> str:
        line = next(i for i, t in enumerate(text, 1) if needle in t)
        return f"{path}:{line}: {key}"

    return path, [
        at("replica:", "agents.echo.replica: unknown key"),
        at("concurrency:", "agents.sink.worker.concurrency:"),
        at("modle:", "agents.intent_parser.config.llm.modle: unknown key"),
        at(
            "provider: openai",
            "agents.planner.config.llm.provider: the openai provider needs "
            "the environment variable OPENAI_API_KEY",
        ),
    ]


def problem_lines(result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("agent-runtime: error")
    ]
    assert len(errors) == len(expected), result.stderr
    for want in expected:
        assert any(line.startswith(f"agent-runtime: error: {want}") for line in errors), (
            want,
            result.stderr,
        )


def test_validate_reports_every_problem_with_file_and_line(
    tmp_path: Path, prefix: str, env: dict[str, str]
) -> None:
    path, expected = broken_config(tmp_path, prefix)
    no_keys = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    result = cli("validate", str(path), env=no_keys)
    problem_lines(result, expected)
    assert "OK" not in result.stdout


def test_worker_up_and_run_refuse_an_invalid_config_before_starting_anything(
    tmp_path: Path, prefix: str, env: dict[str, str], redis_url: str
) -> None:
    path, expected = broken_config(tmp_path, prefix)
    no_keys = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    logs = tmp_path / "logs"
    logs.mkdir()
    home = Path(env["AGENT_RUNTIME_HOME"])
    for command in (
        ["run", "hello", "--log-dir", str(logs)],
        ["up", "--log-dir", str(logs)],  # would start the embedded server without a URL
        ["up", "--log-dir", str(logs), "--redis-url", redis_url],
    ):
        problem_lines(cli(*command, "-c", str(path), env=no_keys), expected)
    assert not any(logs.iterdir()), "no worker was started"
    assert not any(home.iterdir()), "no embedded server was started"
    # a worker checks the whole config, and the API key of its own agent type only
    worker = cli("worker", "echo", "-c", str(path), "--redis-url", redis_url, env=no_keys)
    problem_lines(worker, expected[:3])


def test_empty_and_over_limit_text_is_refused_with_the_limit(
    tmp_path: Path, prefix: str, env: dict[str, str], redis_url: str
) -> None:
    config = echo_sink(tmp_path, prefix)
    logs = tmp_path / "logs"
    for text in ("", " \n ", "x" * 16_001):
        for command in (["send", text], ["run", text, "--log-dir", str(logs)]):
            result = cli(*command, "-c", str(config), "--redis-url", redis_url, env=env)
            one_line(result, EXIT_USAGE, "the request text", "16,000")
    assert not logs.exists() or not any(logs.iterdir()), "run started nothing"
    with redis.Redis(unix_socket_path=redis_url.removeprefix("unix://")) as plain:
        assert plain.keys(f"{prefix}:*") == [], "nothing was published"


# ------------------------------------------------------------------ replies and timeouts
def test_run_exits_3_when_no_reply_comes_in_time(
    tmp_path: Path, prefix: str, env: dict[str, str], redis_url: str
) -> None:
    """No worker of any agent type runs (replicas 0), so nothing can answer, not even the
    fleet's deadline sweep: ``run`` gives up after --timeout plus the reply grace."""
    config = echo_sink(tmp_path, prefix, replicas=0)
    result = cli(
        "run", "anyone?", "--timeout", "0.2", "-c", str(config), "--redis-url", redis_url, env=env
    )
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    assert "Traceback" not in result.stderr
    assert "no reply to request" in result.stderr and "within 0.2s" in result.stderr


def test_run_prints_any_terminal_reply_of_a_custom_pipeline(
    tmp_path: Path, prefix: str, env: dict[str, str], redis_url: str
) -> None:
    config = echo_sink(tmp_path, prefix)
    result = cli("run", "hello run", "--json", "-c", str(config), "--redis-url", redis_url, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"message_type": "test.reply", "text": "HELLO RUN"}


@pytest.mark.anyio
async def test_send_wait_renders_a_report_as_run_does_and_exits_1_when_not_ok(
    tmp_path: Path, prefix: str, env: dict[str, str], redis_url: str
) -> None:
    config = write_config(
        tmp_path, prefix, {"refuser": {"class": "tests.fixtures.cli_agents:Refuser"}}
    )
    args = ["-c", str(config), "--redis-url", redis_url, "--timeout", "30"]
    async with Supervisor(config, redis_url, env=env, log_dir=tmp_path / "logs") as sup:
        await sup.wait_ready(60)
        text, as_json = await anyio.to_thread.run_sync(
            lambda: (
                cli("send", "please", "--wait", *args, env=env),
                cli("send", "please", "--wait", "--json", *args, env=env),
            )
        )
    assert text.returncode == EXIT_NOT_OK, text.stderr
    cid = text.stdout.splitlines()[0].removeprefix("correlation id: ")
    assert f"request {cid}: REJECTED in " in text.stdout  # run's report renderer
    assert "  - refused by the test agent" in text.stdout
    assert "did not succeed" in text.stderr and "Traceback" not in text.stderr
    assert as_json.returncode == EXIT_NOT_OK, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply["message_type"] == "report.created"
    assert reply["payload"]["status"] == "rejected"
