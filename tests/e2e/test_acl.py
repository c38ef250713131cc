"""Per-agent Redis users (docs/security.md, "Redis users (ACL)"): a server of the test's own,
locked down the way ``agent-runtime up`` locks down its embedded server; ``ACL DRYRUN`` of
every agent user over an allow/deny matrix; the six-agent default pipeline end to end with
every worker process connected as its own user, and not one command refused meanwhile."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from agent_runtime.approval import pending_approvals, submit_decision
from agent_runtime.cli import main
from agent_runtime.client import Client
from agent_runtime.config.acl import Credentials, lock_down, publish_targets
from agent_runtime.testing import wait_until
from agent_runtime.transport.acl import (
    ADMIN_USER,
    AclUser,
    admin_rules,
    install_users,
    user_name,
)
from agent_runtime.transport.embedded import EmbeddedServer
from agent_runtime.worker.loop import default_consumer_name
from protocols.pipeline import Report
from tests.e2e.test_cli import CLI, cli, cli_env, write_config
from tests.fixtures.pipeline import LivePipeline, child_env, default_pipeline, supervised

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

FAST = {"block_ms": 100, "heartbeat_interval": 0.3, "drain_timeout": 2, "retry_backoff": 0.05}
AGENTS = ["intent_parser", "planner", "safety_checker", "router", "executor", "reporter"]


@dataclass
class Locked:
    server: EmbeddedServer
    credentials: Credentials
    pipe: LivePipeline
    admin: Any  # redis.Redis as the admin user


#: The embedded Valkey, and Debian's Redis 7.0 (the oldest server the runtime supports).
SERVERS = {"valkey": None, "redis7": shutil.which("redis-server") or "/usr/bin/redis-server"}


def _start_server(folder: Path, binary: str | None) -> EmbeddedServer:
    with pytest.MonkeyPatch.context() as patch:
        if binary:
            patch.setenv("AGENT_RUNTIME_SERVER_BIN", binary)
        return EmbeddedServer(folder, persistent=False).start()


@pytest.fixture(scope="module", params=sorted(SERVERS))
def locked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Locked]:
    root = tmp_path_factory.mktemp("acl")
    server = _start_server(root / "redis", SERVERS[request.param])
    try:
        settings = default_pipeline(**FAST)
        deploy = settings["agents"]["executor"]["config"]["tools"]["deploy"]
        deploy["options"] = {**deploy.get("options", {}), "state_dir": str(root / "deploys")}
        pipe = LivePipeline(
            root, server.url, child_env(), prefix="acl" + uuid.uuid4().hex[:8], **settings
        )
        pipe.r.close()
        credentials = anyio.run(lock_down, pipe.pipeline, server.url, root / "secrets")
        pipe.url = credentials.admin_url
        pipe.r = redis.Redis.from_url(credentials.admin_url)
        yield Locked(server, credentials, pipe, pipe.r)
        pipe.close()
    finally:
        server.stop()


def dryrun(locked: Locked, agent: str, *command: str) -> str:
    user = user_name(locked.pipe.keys, agent)
    answer = locked.admin.execute_command("ACL", "DRYRUN", user, *command)
    return answer.decode() if isinstance(answer, bytes) else str(answer)


def allowed(locked: Locked, agent: str, *command: str) -> bool:
    return dryrun(locked, agent, *command) == "OK"


@pytest.mark.parametrize("agent", AGENTS)
def test_each_agent_user_may_do_its_job_and_nothing_else(locked: Locked, agent: str) -> None:
    keys = locked.pipe.keys
    targets = publish_targets(locked.pipe.pipeline)[agent]
    own = keys.inbox(agent)
    others = [a for a in AGENTS if a != agent]
    foreign = [a for a in others if a not in targets]
    assert foreign, "every agent type has an inbox it must not write"

    # its own inbox: read, ack, claim, inspect
    assert allowed(
        locked, agent, "XREADGROUP", "GROUP", agent, "c", "COUNT", "1", "STREAMS", own, ">"
    )
    assert allowed(locked, agent, "XACK", own, agent, "1-0")
    assert allowed(locked, agent, "XAUTOCLAIM", own, agent, "c", "1000", "0-0", "COUNT", "10")
    assert allowed(locked, agent, "XINFO", "GROUPS", own)
    # the next hops: XADD only; its own dead letters, any reply stream, trace, state
    for target in targets:
        assert allowed(locked, agent, "XADD", keys.inbox(target), "*", "m", "x"), target
        if target == agent:  # the router's timers and results to itself
            continue
        assert not allowed(locked, agent, "XRANGE", keys.inbox(target), "-", "+"), target
        assert not allowed(locked, agent, "XDEL", keys.inbox(target), "1-0"), target
        assert not allowed(locked, agent, "DEL", keys.inbox(target)), target
    assert allowed(locked, agent, "XADD", keys.dlq(agent), "*", "m", "x")
    cid = str(uuid.uuid4())
    assert allowed(locked, agent, "XADD", keys.reply(cid), "*", "m", "x")
    assert allowed(locked, agent, "RPUSH", keys.trace(cid), "x")
    assert allowed(locked, agent, "SET", keys.outcome(cid), "x", "NX", "EX", "60")
    # everyone else's inboxes and dead letters: neither written nor read
    for other in foreign:
        assert not allowed(locked, agent, "XADD", keys.inbox(other), "*", "m", "x"), other
    for other in others:
        inbox = keys.inbox(other)
        assert not allowed(locked, agent, "XRANGE", inbox, "-", "+"), other
        assert not allowed(locked, agent, "XREADGROUP", "GROUP", other, "c", "STREAMS", inbox, ">")
        assert not allowed(locked, agent, "XACK", inbox, other, "1-0"), other
        assert not allowed(locked, agent, "XADD", keys.dlq(other), "*", "m", "x"), other
        assert not allowed(locked, agent, "XRANGE", keys.dlq(other), "-", "+"), other
    # nothing outside the runtime's keys, no administration
    assert not allowed(locked, agent, "SET", "elsewhere", "x")
    assert not allowed(locked, agent, "GET", "elsewhere")
    for command in (
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("DEBUG", "SLEEP", "0"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
        ("CLIENT", "KILL", "ID", "1"),
        ("CLIENT", "LIST"),
        ("CLIENT", "PAUSE", "10"),
        ("MONITOR",),
        ("SCRIPT", "FLUSH"),
        ("SCAN", "0"),
        ("PUBLISH", "chan", "x"),
    ):
        assert not allowed(locked, agent, *command), command


def test_the_default_user_is_off(locked: Locked) -> None:
    client = redis.Redis(unix_socket_path=str(locked.server.socket_path))
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()
    flags = locked.admin.acl_getuser("default")["flags"]
    assert "off" in flags and "on" not in flags


def test_a_refused_user_leaves_the_default_user_on(tmp_path: Path) -> None:
    """install_users sends every ACL SETUSER in one pipeline and switches the default user
    off only after all of them were accepted: a refused rule raises and locks nobody out."""
    server = _start_server(tmp_path / "redis", None)
    try:
        admin = AclUser(ADMIN_USER, "pw-admin", admin_rules())
        good = AclUser("ok-user", "pw-ok", ("~ok:*", "+get"))
        bad = AclUser("bad-user", "pw-bad", ("+no-such-command",))
        with pytest.raises(redis.ResponseError):
            anyio.run(install_users, server.url, [good, bad], admin)
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        try:
            assert client.ping()  # the default user still works
            assert "on" in client.acl_getuser("default")["flags"]
            assert client.acl_getuser("ok-user") is not None  # the ones before were made
        finally:
            client.close()
        anyio.run(install_users, server.url, [good], admin)
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        try:
            with pytest.raises(redis.AuthenticationError):
                client.ping()
        finally:
            client.close()
    finally:
        server.stop()


def test_the_default_pipeline_runs_end_to_end_under_per_agent_users(locked: Locked) -> None:
    """Tool steps, a human approval, a dead letter: every path under the agents' own users,
    and the server refused none of their commands meanwhile."""
    locked.admin.execute_command("ACL", "LOG", "RESET")
    pipe = locked.pipe
    env = {"AGENT_RUNTIME_APPROVAL_KEY": secrets.token_hex(32)}
    with supervised(pipe, env=env, agent_urls=locked.credentials.agent_urls) as (portal, _):
        users = _connected_users(locked.admin)
        assert {user_name(pipe.keys, agent) for agent in AGENTS} <= users
        try:
            reports = portal.call(_requests, pipe)
        except Exception as exc:  # say what the server refused, if anything
            refused = _describe(locked.admin.execute_command("ACL", "LOG"))
            raise AssertionError(f"{exc!r}; ACL LOG:\n{refused}") from exc
        pipe.r.xadd(pipe.keys.inbox("intent_parser"), {"m": "not an envelope"})
        wait_until(lambda: pipe.dead_letters("intent_parser"), 30, message="a dead letter")
        # a container's health probe runs with its worker's own user
        own = locked.credentials.agent_urls["executor"]
        consumer = default_consumer_name("executor", 0)
        probe = ["--config", str(pipe.config_path), "--redis-url", own]
        assert main(["health", "--agent", "executor", "--consumer", consumer, *probe]) == 0
    assert [r.status for r in reports] == ["succeeded"] * 3, [r.reasons for r in reports]
    assert reports[1].steps[0].output["stdout"]
    assert reports[2].steps[-1].output["version"] == "7"
    # every refusal the server logged meanwhile; INFO (an @dangerous command) is the one
    # expected: each worker's start-up check of maxmemory-policy, which it then leaves to
    # the operator's connection
    refused = locked.admin.execute_command("ACL", "LOG")
    assert {entry[b"object"] for entry in refused} <= {b"info"}, _describe(refused)


async def _requests(pipe: LivePipeline) -> list[Report]:
    reports = []
    async with Client.connect(pipe.url, pipe.pipeline) as client:
        for text in (
            "list files in configs and read configs/policy.yaml",
            "run uptime then count words in configs/policy.yaml",
        ):
            reply = await client.request(text, timeout=120)
            assert isinstance(reply.payload, Report)
            reports.append(reply.payload)
        message = await client.publish("deploy web to prod version 7", timeout=120)
        cid = str(message.correlation_id)
        with anyio.fail_after(30):
            while not await pending_approvals(client.state, client.keys, cid):
                await anyio.sleep(0.05)
        await submit_decision(client, cid, approved=True, steps=["s1"], approver="tester")
        reply = await client.wait_reply(message, 120)
        assert isinstance(reply.payload, Report)
        reports.append(reply.payload)
    return reports


def _connected_users(admin: Any) -> set[str]:
    clients = admin.client_list()
    return {str(c.get("user")) for c in clients}


def _describe(log: list[Any]) -> str:
    return "\n".join(str(entry) for entry in log)


def test_the_rendered_acl_file_is_what_a_server_enforces(tmp_path: Path, locked: Locked) -> None:
    """The file an operator loads (``agent-runtime acl``): a real server started with it
    refuses the default user and lets each agent user do exactly its part."""
    out, secrets_dir = tmp_path / "users.acl", tmp_path / "secrets"
    argv = ["acl", str(locked.pipe.config_path), "--secrets-dir", str(secrets_dir), "-o", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert "user default off" in text and "+@all" not in text
    password = (secrets_dir / user_name(locked.pipe.keys, "executor")).read_text().strip()
    assert password not in text  # only its hash
    server = EmbeddedServer(
        tmp_path / "redis", persistent=False, extra_args=("--aclfile", str(out))
    )
    with server:
        keys = locked.pipe.keys
        socket = tmp_path / "redis" / "redis.sock"
        with redis.Redis(unix_socket_path=str(socket)) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        user = user_name(keys, "executor")
        url = f"unix://{user}:{password}@{socket}"
        with redis.Redis.from_url(url) as executor:
            assert executor.xadd(keys.inbox("router"), {"m": "x"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                executor.xadd(keys.inbox("reporter"), {"m": "x"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                executor.xrange(keys.inbox("router"))
            with pytest.raises(redis.exceptions.NoPermissionError):
                executor.flushall()


def test_up_gives_each_worker_its_own_user_and_the_commands_the_admin(
    tmp_path: Path, prefix: str, subprocess_env: dict[str, str]
) -> None:
    """``up`` without a URL: the embedded server's default user is off, every worker runs as
    its agent type's user (password in its environment, never on argv), and send, status,
    trace and dlq in another terminal still work, as the admin user recorded for them."""
    config = write_config(tmp_path, prefix)
    env = cli_env(tmp_path, subprocess_env)
    home = Path(env["AGENT_RUNTIME_HOME"])
    out = tmp_path / "up.out"
    with out.open("w") as sink:
        up = subprocess.Popen(
            [CLI, "up", "--config", str(config)], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: "workers ready" in out.read_text() or up.poll() is not None,
            60,
            message="up to report ready",
        )
        text = out.read_text()
        assert "one Redis user per agent type" in text, text
        sent = cli("send", "as admin", "--wait", "--json", "--config", str(config), env=env)
        assert sent.returncode == 0, sent.stderr
        cid = json.loads(sent.stdout)["correlation_id"]
        for args in (["status"], ["trace", cid], ["dlq", "list"]):
            done = cli(*args, "--config", str(config), env=env)
            assert done.returncode == 0, (args, done.stderr)
        state = home / "server.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        socket = home / "data" / "redis.sock"
        with redis.Redis(unix_socket_path=str(socket)) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        with redis.Redis.from_url(json.loads(state.read_text())["url"]) as admin:
            workers = [c for c in admin.client_list() if c["user"].startswith(f"{prefix}-")]
        assert {c["user"] for c in workers} == {f"{prefix}-echo", f"{prefix}-sink"}
        for pid in _worker_pids(text):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"@" not in argv and ADMIN_USER.encode() not in environ
            assert f"AGENT_RUNTIME_REDIS_URL=unix://{prefix}-".encode() in environ
        # a worker started by hand finds the admin URL recorded, and uses its own user
        extra = subprocess.Popen(
            [CLI, "worker", "echo", "--slot", "9", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            beat = f"{prefix}:hb:echo:{default_consumer_name('echo', 9)}"
            with redis.Redis.from_url(json.loads(state.read_text())["url"]) as admin:
                wait_until(lambda: admin.exists(beat), 60, message="the extra worker's heartbeat")
            assert _users(state).count(ADMIN_USER) == 1  # the connection asking, no other
        finally:
            extra.terminate()
            extra.wait(30)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, out.read_text()


def _users(state: Path) -> list[str]:
    """The user of every connection to the server recorded in ``state``."""
    with redis.Redis.from_url(json.loads(state.read_text())["url"]) as admin:
        return [c["user"] for c in admin.client_list()]


def _worker_pids(text: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"^(?:echo|sink)\s+\d+\s+(\d+)\s", text, re.M)]
    assert len(pids) == 2, text
    return pids


def test_up_on_a_server_of_your_own_runs_each_agent_as_its_user(
    tmp_path: Path, prefix: str, subprocess_env: dict[str, str]
) -> None:
    """The operator's path: render the users, load the file (plus an admin of their own) into
    a server, then ``up --redis-url ADMIN --acl-secrets DIR``: every worker connects as its
    agent type's user, requests are answered."""
    config = write_config(tmp_path, prefix)
    env = cli_env(tmp_path, subprocess_env)
    users, secrets_dir = tmp_path / "users.acl", tmp_path / "acl"
    assert main(["acl", str(config), "--secrets-dir", str(secrets_dir), "-o", str(users)]) == 0
    password = secrets.token_urlsafe(24)
    with users.open("a") as out:
        out.write(f"user operator on >{password} ~* &* +@all\n")
    with EmbeddedServer(tmp_path / "redis", persistent=False, extra_args=("--aclfile", str(users))):
        url = f"unix://operator:{password}@{tmp_path / 'redis' / 'redis.sock'}"
        out_file = tmp_path / "up.out"
        with out_file.open("w") as sink:
            up = subprocess.Popen(
                [CLI, "up", "--config", str(config), "--acl-secrets", str(secrets_dir)],
                env={**env, "AGENT_RUNTIME_REDIS_URL": url},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: "workers ready" in out_file.read_text() or up.poll() is not None,
                60,
                message="up to report ready",
            )
            sent = cli(
                "send",
                "own users",
                "--wait",
                "--config",
                str(config),
                env=env | {"AGENT_RUNTIME_REDIS_URL": url},
            )
            assert sent.returncode == 0, sent.stderr
            with redis.Redis.from_url(url) as admin:
                workers = {c["user"] for c in admin.client_list()} - {"operator"}
            assert workers == {f"{prefix}-echo", f"{prefix}-sink"}
        finally:
            up.send_signal(signal.SIGINT)
            code = up.wait(60)
        assert code == 0, out_file.read_text()
