"""Expected failures of a command as one line and an exit status (the table in README.md).

An expected failure (the server cannot be reached, a wrong password, a bad URL, a timeout, an
invalid config) is printed as one line naming the Redis URL (password masked) with a hint, and
never as a traceback; ``AGENT_RUNTIME_DEBUG=1`` prints the traceback as well. Anything else is
a bug: its traceback is printed and the status is :data:`EXIT_INTERNAL`.

anyio task groups wrap what their tasks raise in exception groups; a group whose leaves are
all expected failures is described by its first leaf (ignoring cancellations).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from agent_runtime.errors import (
    AgentRuntimeError,
    ConfigError,
    EmbeddedServerError,
    RequestError,
    RequestTimeout,
)
from agent_runtime.transport import server_errors
from agent_runtime.transport.connect import redact_url
from agent_runtime.worker.supervisor import WorkersNotReady

EXIT_OK = 0  # the command did what was asked; a request succeeded
EXIT_NOT_OK = 1  # a request did not succeed (failed, rejected, ...); a check found a problem
EXIT_USAGE = 2  # bad arguments, invalid config, invalid request text, bad URL
EXIT_TIMEOUT = 3  # a request's deadline passed (no reply in time, or a timeout reply)
EXIT_UNREACHABLE = 4  # the Redis server cannot be reached or used (refused, auth, TLS, ...),
# no server is running, or the workers of 'run'/'up' did not start
EXIT_INTERNAL = 70  # a bug: the traceback is printed
EXIT_INTERRUPTED = 130  # Ctrl-C

URL_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


#: What talking to a server can raise (redis-py wraps socket and TLS errors in these).
SERVER_ERRORS = (
    server_errors.RedisError,
    server_errors.RedisClusterException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
    socket.gaierror,
)


class UsageError(AgentRuntimeError):
    """The command line asks for something impossible (exit 2)."""


class ServerUnavailable(AgentRuntimeError):
    """There is no server to talk to (exit 4)."""


@dataclass(frozen=True)
class Failure:
    code: int
    lines: list[str]


def describe(exc: BaseException, url: str | None) -> Failure | None:
    """The failure ``exc`` is as lines for stderr and an exit status; None for a bug."""
    leaves = list(_leaves(exc))
    if not leaves:
        return None
    described = [_describe_one(leaf, url) for leaf in leaves]
    first = described[0]
    if first is None or any(d is None for d in described):
        return None
    return Failure(first.code, [scrub(line, url) for line in first.lines])


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, without cancellations."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    elif not _is_cancellation(exc):
        yield exc


def _is_cancellation(exc: BaseException) -> bool:
    return type(exc).__name__ in ("CancelledError", "Cancelled")


def _describe_one(exc: BaseException, url: str | None) -> Failure | None:
    if isinstance(exc, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, [])
    if isinstance(exc, RequestTimeout):
        return Failure(
            EXIT_TIMEOUT,
            [f"{exc} (is a worker running for its agent type? see 'agent-runtime status')"],
        )
    if isinstance(exc, ConfigError):
        return Failure(EXIT_USAGE, config_lines(exc))
    if isinstance(exc, ServerUnavailable | EmbeddedServerError | WorkersNotReady):
        return Failure(EXIT_UNREACHABLE, [str(exc)])
    if isinstance(exc, UsageError | RequestError):
        return Failure(EXIT_USAGE, [str(exc)])
    if isinstance(exc, SERVER_ERRORS):
        return _server_failure(exc, url)
    if isinstance(exc, OSError):  # a file or directory of this machine, not the server
        return Failure(EXIT_USAGE, [str(exc)])
    if isinstance(exc, AgentRuntimeError):
        return Failure(EXIT_USAGE, [str(exc)])
    return None


def config_lines(exc: ConfigError) -> list[str]:
    """One line per problem (a ConfigError may list several, one per line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines or ["invalid config"]


def _server_failure(exc: BaseException, url: str | None) -> Failure:
    chain = list(_chain(exc))
    where = mask_url(url) if url else "the Redis server"
    what, hint = _diagnose(chain)
    if what is None:
        what, hint = f"failed: {_first_line(exc)}", "AGENT_RUNTIME_DEBUG=1 shows the traceback"
    return Failure(EXIT_UNREACHABLE, [scrub(f"{where}: {what} ({hint})", url)])


def _diagnose(chain: list[BaseException]) -> tuple[str | None, str]:
    """What went wrong talking to the server, and what to check."""

    def has(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    if has(server_errors.AuthenticationError) or _says(chain, "WRONGPASS", "NOAUTH"):
        return "authentication failed", (
            "check the user and password in the URL: redis://USER:PASSWORD@HOST:PORT"
        )
    if tls := has(ssl.SSLError, ssl.CertificateError):
        return f"TLS failed: {_first_line(tls)}", (
            "check that the server speaks TLS on that port and that its certificate is trusted: "
            "CA file in AGENT_RUNTIME_REDIS_TLS_CA_FILE, redis_tls.ca_file or ssl_ca_certs="
        )
    if has(socket.gaierror):
        return "unknown host", "check the host name in the URL"
    if has(ConnectionRefusedError):
        return "connection refused", "is the server running on that host and port?"
    if has(FileNotFoundError):
        return "no server socket at that path", (
            "is the server running? 'agent-runtime up' starts the embedded one"
        )
    if has(server_errors.ServerTimeoutError, TimeoutError, socket.timeout):
        return "timed out", (
            "the server did not answer; check the host and port (and, with rediss://, that "
            "the server speaks TLS)"
        )
    if has(server_errors.InvalidResponse):
        return "not a Redis server (protocol error)", "check the host and port in the URL"
    if err := has(server_errors.ResponseError):
        return f"the server refused a command: {_first_line(err)}", (
            "check the server's state and this user's permissions"
        )
    if err := has(server_errors.ServerConnectionError, ConnectionError, OSError):
        return f"cannot connect: {_first_line(err)}", "is the server running and reachable?"
    return None, ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes and contexts (each once)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]


def _says(chain: list[BaseException], *words: str) -> bool:
    return any(word in str(e) for e in chain for word in words)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def mask_url(url: str) -> str:
    """``url`` with its password (user info or ``password=`` query) replaced by ``***``."""
    masked = redact_url(url)
    base, sep, query = masked.partition("?")
    if not sep:
        return masked
    items = ["password=***" if item.startswith("password=") else item for item in query.split("&")]
    return f"{base}?{'&'.join(items)}"


def url_password(url: str) -> str:
    """The password in ``url`` (user info or ``password=`` query), or ''."""
    _scheme, _sep, rest = url.partition("://")
    location, _, query = rest.partition("?")
    creds, at, _host = location.split("/", 1)[0].rpartition("@")
    password = creds.partition(":")[2] if at else ""
    for key, value in parse_qsl(query):
        if key == "password" and value:
            password = value
    return password


def scrub(text: str, url: str | None) -> str:
    """``text`` without the URL's password (a very short one is left: masking it would mangle
    host names and ports, and a server's error text does not repeat the password anyway)."""
    password = url_password(url) if url else ""
    return text.replace(password, "***") if len(password) >= 4 else text
