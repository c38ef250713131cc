"""Spawn and keep alive the worker processes of a pipeline (``agent-runtime up`` and ``run``).

    async with Supervisor("configs/default.yaml", url) as sup:
        await sup.wait_ready(30)
        print(sup.processes())

Every replica of every agent type runs as ``python -m agent_runtime worker NAME --slot I
--config C`` (argv only). A child that exits while the supervisor runs is restarted after an
exponential backoff (``restart_backoff`` doubling up to ``max_backoff``; back to the start once
a child has lived :data:`STABLE_AFTER` seconds). Leaving the context sends SIGTERM to every
child, waits up to the largest ``drain_timeout`` + 5 s, then SIGKILLs what is left.

Children run in their own session, so a terminal's Ctrl-C reaches only the supervisor, which
forwards exactly one SIGTERM (a second signal would cut a worker's drain short). On Linux a
child also gets SIGTERM when the supervisor dies (PR_SET_PDEATHSIG): the child asks for it
itself, first thing (:func:`die_with_supervisor`, with the supervisor's pid from
``AGENT_RUNTIME_SUPERVISOR_PID``), and exits at once if the supervisor died before that. No
``preexec_fn``: with one, subprocess must fork and run Python code in the child before the exec;
without, it uses vfork (measured: docs/benchmarks.md "Issue 17: start time", second pass).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

import anyio
import structlog
from anyio.abc import TaskGroup

import agent_runtime
from agent_runtime.approval import agent_env
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import AgentRuntimeError, ConfigError
from agent_runtime.transport.base import Heartbeats
from agent_runtime.transport.connect import redact_url, unavailable
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.redis import RedisTransport
from agent_runtime.worker.loop import default_consumer_name

#: Seconds a child must live before its restart backoff starts again from the beginning.
STABLE_AFTER = 30.0
#: Seconds between checks of the children's exit status.
POLL_INTERVAL = 0.1
#: Extra seconds, beyond the largest drain_timeout, children get after SIGTERM.
KILL_GRACE = 5.0
PR_SET_PDEATHSIG = 1
#: The supervisor's pid, in each child's environment (:func:`die_with_supervisor`).
SUPERVISOR_PID_ENV = "AGENT_RUNTIME_SUPERVISOR_PID"


class WorkersNotReady(AgentRuntimeError):
    """Not every worker wrote its heartbeat within the timeout."""


class SupervisedWorker(NamedTuple):
    """A snapshot of one supervised child (``Supervisor.processes``); a test or embedder
    that starts one worker process itself uses ``agent_runtime.testing.WorkerProcess``."""

    agent: str
    slot: int
    pid: int | None
    restarts: int


@dataclass
class _Child:
    agent: str
    slot: int
    index: int  # unique across this supervisor's children
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    log_path: Path | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def consumer(self) -> str:
        return default_consumer_name(self.agent, self.slot)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.alive() else None


def die_with_supervisor() -> None:
    """In a supervised worker (``AGENT_RUNTIME_SUPERVISOR_PID`` set): get SIGTERM when the
    supervisor dies (PR_SET_PDEATHSIG, Linux), then exit now (status 1) if it already has:
    our parent is no longer its pid. The request comes first and the check after it, so no
    death goes unseen. Unset (a worker started by hand): nothing. The variable is removed
    from our environment (the worker's own children are not supervised by that pid)."""
    expected = os.environ.pop(SUPERVISOR_PID_ENV, "")
    if not expected.isdigit():
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(expected):
        raise SystemExit(f"agent-runtime worker: its supervisor (pid {expected}) is gone")


class Supervisor:
    """Runs the configured replicas of every agent type as separate worker processes."""

    def __init__(
        self,
        config_path: str | Path,
        redis_url: str,
        *,
        replicas: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        restart_backoff: float = 0.5,
        max_backoff: float = 30.0,
        agent_urls: Mapping[str, str] | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.redis_url = redis_url
        # the caller's pipeline when it loaded this config already (``up``, ``run``)
        self.pipeline = pipeline if pipeline is not None else Pipeline.load(self.config_path)
        self.log_dir = log_dir
        self.restart_backoff = restart_backoff
        self.max_backoff = max_backoff
        self.log = structlog.get_logger("agent_runtime.worker.supervisor")
        self._env = _child_env(env, redis_url)
        self._agent_urls = dict(agent_urls or {})  # agent type -> its own credentials
        pairs = [
            (agent, slot)
            for agent, count in self._replicas(replicas).items()
            for slot in range(count)
        ]
        self._children = [_Child(agent, slot, i) for i, (agent, slot) in enumerate(pairs)]
        self._stopping = False
        self._tasks: TaskGroup | None = None

    def _replicas(self, override: dict[str, int] | None) -> dict[str, int]:
        counts = {name: spec.replicas for name, spec in self.pipeline.config.agents.items()}
        for name, count in (override or {}).items():
            if name not in counts:
                raise ConfigError(
                    f"replicas: unknown agent type {name!r} (this config has: "
                    f"{', '.join(sorted(counts))})"
                )
            if count < 0:
                raise ConfigError(f"replicas: {name}={count} must be >= 0")
            counts[name] = count
        return counts

    # ------------------------------------------------------------------ public API
    def processes(self) -> list[SupervisedWorker]:
        """(agent, slot, pid, restarts) of every child; pid is None while it awaits restart."""
        return [SupervisedWorker(c.agent, c.slot, c.pid, c.restarts) for c in self._children]

    def log_path(self, agent: str, slot: int) -> Path | None:
        """The file a child's stdout/stderr go to (None: inherited)."""
        return self.log_dir / f"{agent}-{slot}.log" if self.log_dir else None

    async def wait_ready(self, timeout: float) -> None:
        """Return once every worker's heartbeat key exists and names its current pid. A read
        that fails for want of the server (a dropped reply) is tried again until ``timeout``;
        the last read's error, if it fails too, is raised."""
        keys = self.pipeline.config.keys
        transport = RedisTransport.connect(self.redis_url, keys)
        try:
            with anyio.move_on_after(timeout):
                while True:
                    try:
                        missing = await self._not_ready(transport.heartbeats, keys)
                    except Exception as exc:  # a lost reply or reconnect: look again
                        if not unavailable(exc):
                            raise
                        missing = list(self._children)
                    if not missing:
                        return
                    await anyio.sleep(0.05)
            missing = await self._not_ready(transport.heartbeats, keys)
        finally:
            await transport.aclose()
        if missing:
            raise WorkersNotReady(self._not_ready_message(missing, timeout))

    async def _not_ready(self, heartbeats: Heartbeats, keys: Keys) -> list[_Child]:
        children = list(self._children)
        if not children:
            return []
        beats = await heartbeats.read([keys.heartbeat(c.agent, c.consumer) for c in children])
        return [
            c
            for c, beat in zip(children, beats, strict=True)
            if c.pid is None or _beat_pid(beat) != c.pid
        ]

    def _not_ready_message(self, missing: list[_Child], timeout: float) -> str:
        parts = []
        for child in missing:
            note = f"{child.agent}[{child.slot}]"
            if child.exits:
                note += f" (exited {len(child.exits)}x, last code {child.exits[-1]})"
            if child.log_path:
                note += f" log: {child.log_path}"
            parts.append(note)
        return f"workers not ready within {timeout}s: " + ", ".join(parts)

    # ------------------------------------------------------------------ context
    async def __aenter__(self) -> Supervisor:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        try:
            for child in self._children:
                self._spawn(child)
                self._tasks.start_soon(self._keep_running, child)
        except BaseException as exc:  # stop what did start, then re-raise
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.log.info(
            "supervisor_started",
            workers=len(self._children),
            redis_url=redact_url(self.redis_url),
            config=str(self.config_path),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._stopping = True
        assert self._tasks is not None
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_all()
        finally:
            self._tasks.cancel_scope.cancel()
            # Only a cancellation goes into the task group (its scope may own it); any other
            # exception of the body propagates as itself, not wrapped in an ExceptionGroup.
            result: bool | None = None
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                result = await self._tasks.__aexit__(exc_type, exc, tb)
            else:
                await self._tasks.__aexit__(None, None, None)
        return result

    # ------------------------------------------------------------------ children
    def _argv(self, child: _Child) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "agent_runtime",
            "worker",
            child.agent,
            "--slot",
            str(child.slot),
            "--config",
            str(self.config_path),
        ]
        if "AGENT_RUNTIME_REDIS_URL" not in self._child_env(child):  # credentials: env only
            argv += ["--redis-url", self.redis_url]
        return argv

    def secrets(self) -> dict[str, tuple[str, ...]]:
        """Agent type -> the restricted variables it receives: its ``secrets:`` list, else its
        class's (agent_runtime/approval.py ``restricted``)."""
        return {
            name: tuple(spec.secrets)
            if spec.secrets is not None
            else self.pipeline.agents[name].cls.secrets
            for name, spec in self.pipeline.config.agents.items()
        }

    def _child_env(self, child: _Child) -> dict[str, str]:
        """Per child: only the restricted secrets its agent type names (no other worker gets
        the approval private key), AGENT_RUNTIME_WORKER_INDEX, and AGENT_RUNTIME_METRICS_PORT
        (when set) offset by that index, so no two workers of this host try to bind the same
        port."""
        secrets = self.secrets()
        named = {n for names in secrets.values() for n in names}
        env = agent_env(self._env, secrets[child.agent], named)
        env["AGENT_RUNTIME_WORKER_INDEX"] = str(child.index)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())  # die_with_supervisor
        env.update(_agent_url_env(self._agent_urls, child.agent))
        env.pop("AGENT_RUNTIME_CONSUMER_NAME", None)  # one name per process: children use slots
        base = env.get("AGENT_RUNTIME_METRICS_PORT", "")
        if base.isdigit() and int(base) > 0:
            env["AGENT_RUNTIME_METRICS_PORT"] = str(int(base) + child.index)
        return env

    def metrics_port(self, agent: str, slot: int) -> int | None:
        """The metrics port given to a child (None unless AGENT_RUNTIME_METRICS_PORT is set)."""
        child = next(c for c in self._children if (c.agent, c.slot) == (agent, slot))
        port = self._child_env(child).get("AGENT_RUNTIME_METRICS_PORT", "")
        return int(port) if port.isdigit() and int(port) > 0 else None

    def _spawn(self, child: _Child) -> None:
        child.log_path = self.log_path(child.agent, child.slot)
        output: IO[bytes] | None = child.log_path.open("ab") if child.log_path else None
        try:
            child.process = subprocess.Popen(  # noqa: S603 - argv only, no shell
                self._argv(child),
                env=self._child_env(child),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                close_fds=True,  # no preexec_fn: the child asks for PR_SET_PDEATHSIG itself
            )
        finally:
            if output is not None:
                output.close()
        child.started = time.monotonic()
        event = "worker_restarted" if child.restarts else "worker_spawned"
        self.log.info(
            event,
            agent=child.agent,
            slot=child.slot,
            pid=child.process.pid,
            restarts=child.restarts,
        )

    async def _keep_running(self, child: _Child) -> None:
        while not self._stopping:
            code = await _wait_exit(child)
            if self._stopping:
                return
            child.exits.append(code)
            lived = time.monotonic() - child.started
            child.backoff = self._next_backoff(child.backoff, lived)
            self.log.warning(
                "worker_exited",
                agent=child.agent,
                slot=child.slot,
                exit_code=code,
                lived_s=round(lived, 2),
                restart_in_s=round(child.backoff, 2),
            )
            await anyio.sleep(child.backoff)
            if self._stopping:
                return
            child.restarts += 1
            self._spawn(child)

    def _next_backoff(self, previous: float, lived: float) -> float:
        if lived >= STABLE_AFTER or previous <= 0:
            return self.restart_backoff
        return min(previous * 2, self.max_backoff)

    async def _stop_all(self) -> None:
        live = [c for c in self._children if c.alive()]
        for child in live:
            _signal(child, signal.SIGTERM)
        grace = self._drain_timeout() + KILL_GRACE
        with anyio.move_on_after(grace):
            for child in live:
                await _wait_exit(child)
        for child in live:
            if child.alive():
                self.log.warning(
                    "worker_killed",
                    agent=child.agent,
                    slot=child.slot,
                    pid=child.pid,
                    after_s=grace,
                )
                _signal(child, signal.SIGKILL)
        for child in live:
            if child.process is not None:
                child.process.wait()
        self.log.info("supervisor_stopped", workers=len(live))

    def _drain_timeout(self) -> float:
        return max(
            (self.pipeline.worker_settings(c.agent).drain_timeout for c in self._children),
            default=0.0,
        )


async def _wait_exit(child: _Child) -> int:
    """The child's exit code, once it exits: a pidfd on Linux, polling elsewhere."""
    process = child.process
    assert process is not None
    fd = _pidfd(process)
    if fd is not None:
        try:
            while process.poll() is None:
                await anyio.wait_readable(fd)
        finally:
            os.close(fd)
    while (code := process.poll()) is None:  # noqa: ASYNC110 - no exit event off Linux
        await anyio.sleep(POLL_INTERVAL)
    return code


def _pidfd(process: subprocess.Popen[bytes]) -> int | None:
    """A pidfd of our (not yet reaped, so not reused) child; None where unsupported."""
    if not hasattr(os, "pidfd_open") or process.poll() is not None:
        return None
    try:
        return os.pidfd_open(process.pid)
    except OSError:  # kernel < 5.3, or the child exited and was reaped meanwhile
        return None


def _signal(child: _Child, signum: signal.Signals) -> None:
    if child.process is not None and child.process.poll() is None:
        try:
            child.process.send_signal(signum)
        except ProcessLookupError:
            pass


def _beat_pid(beat: bytes | None) -> int | None:
    if not beat:
        return None
    try:
        pid = json.loads(beat).get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def _agent_url_env(agent_urls: Mapping[str, str], agent: str) -> dict[str, str]:
    """The Redis URL of ``agent``'s own user (``up`` with per-agent ACL users), in the
    environment: it holds a password, so never on argv. Empty: the supervisor's URL."""
    url = agent_urls.get(agent)
    return {"AGENT_RUNTIME_REDIS_URL": url} if url else {}


def _child_env(extra: dict[str, str] | None, redis_url: str) -> dict[str, str]:
    """The children's environment: ours + ``extra``; PYTHONPATH gains the working directory
    and the source tree holding agent_runtime; a URL with credentials travels in the
    environment (never on argv, where ``ps`` shows it)."""
    env = {**os.environ, **(extra or {})}
    roots = [str(Path.cwd()), str(Path(agent_runtime.__file__).resolve().parent.parent)]
    current = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*current, *roots]))
    env.pop("AGENT_RUNTIME_REDIS_URL", None)
    if redact_url(redis_url) != redis_url:
        env["AGENT_RUNTIME_REDIS_URL"] = redis_url
    return env
