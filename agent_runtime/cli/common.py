"""Options and helpers shared by the commands."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import anyio
import click

from agent_runtime.cli.failures import URL_SCHEMES, ServerUnavailable, UsageError, mask_url
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.validation import load_valid
from agent_runtime.observability.logging import configure_logging
from agent_runtime.transport.connect import Connection, connect
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.embedded import find_running
from agent_runtime.transport.inspect import RuntimeReader
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.tls import TlsSettings, with_settings
from agent_runtime.transport.traces import TraceLog


class Args(SimpleNamespace):
    """The parsed arguments of one command: one attribute per parameter (a repeatable option
    is a list), set by :func:`runs`; ``target_url`` once the command picked its server."""


DEFAULT_CONFIG = "configs/default.yaml"
#: Seconds a command waits to open a connection and for its first PING
#: (``AGENT_RUNTIME_CONNECT_TIMEOUT`` overrides it).
DEFAULT_CONNECT_TIMEOUT = 10.0


def config_option(help: str = "pipeline YAML") -> click.Option:
    """``--config/-c``, defined once for every command that reads the pipeline."""
    return click.Option(
        ["--config", "-c"],
        default=DEFAULT_CONFIG,
        envvar="AGENT_RUNTIME_CONFIG",
        show_envvar=True,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=help,
    )


def redis_option() -> click.Option:
    """``--redis-url``, defined once for every command that talks to the server."""
    return click.Option(
        ["--redis-url"],
        default=None,
        metavar="URL",
        help="redis://, rediss://, unix:// or redis+cluster:// URL (default: "
        "$AGENT_RUNTIME_REDIS_URL, the config's redis_url, or the embedded "
        "server started by 'agent-runtime up')",
    )


def json_option(help: str = "print JSON (for scripts)") -> click.Option:
    """``--json``: every command that prints data can print it as JSON instead."""
    return click.Option(["--json"], is_flag=True, default=False, help=help)


def timeout_option(default: float | None, help: str) -> click.Option:
    """``--timeout/-t`` in seconds (the request's deadline where a command sends one)."""
    return click.Option(
        ["--timeout", "-t"],
        type=float,
        default=default,
        show_default=default is not None,
        metavar="SECONDS",
        help=help,
    )


def config_and_redis() -> list[click.Parameter]:
    return [config_option(), redis_option()]


#: set by cli.parse_args: command callbacks return their parsed Args instead of running
PARSE_ONLY: ContextVar[bool] = ContextVar("agent_runtime_cli_parse_only", default=False)


def runs(run: Callable[[Args], int | None], **fixed: Any) -> Callable[..., Any]:
    """A click callback calling ``run(args)``: the parsed options as a namespace (tuples of
    repeatable options as lists), plus ``fixed``. An expected failure becomes its one-line
    message and exit status (cli.report_failure); SystemExit passes through."""

    def callback(**params: Any) -> Any:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        args = Args(**values, **fixed)
        if PARSE_ONLY.get():  # cli.parse_args: the arguments, nothing run
            path = click.get_current_context().command_path
            args.command = path.split(" ", 1)[1] if " " in path else path
            return args
        try:
            configure_logging()  # once per process: JSON unless stderr is a terminal, redacted
            return int(run(args) or 0)
        except SystemExit:
            raise
        except BaseException as exc:
            from agent_runtime.cli import report_failure

            return report_failure(exc, getattr(args, "target_url", None))

    return callback


def load_pipeline(args: Args, *, environment_for: Iterable[str] | None = ()) -> Pipeline:
    """The pipeline, checked the way ``validate`` checks it: every problem at once (a
    ConfigError, one line per problem, exit 2). ``environment_for``: agent types whose
    environment (the API keys of their LLM providers) must be set in this process; None
    means all of them (for commands that start them)."""
    return load_valid(args.config, environment_for=environment_for)


def redis_url(args: Args, pipeline: Pipeline | None) -> str:
    """The URL to use, checked and answering PING; a clear error when there is none and no
    embedded server runs. Call it before an event loop runs (it runs one for the PING)."""
    url = chosen_url(args, pipeline)
    anyio.run(ping, url)  # one line (exit 4) now rather than a hang or a failure midway
    return url


def chosen_url(args: Args, pipeline: Pipeline | None) -> str:
    """:func:`redis_url` without the PING (a caller that pings over its own connection,
    ``worker``, calls :func:`answers` first thing in its event loop)."""
    url = configured_url(args, pipeline) or find_running()
    if not url:
        raise ServerUnavailable(
            "no Redis server to talk to: no --redis-url, AGENT_RUNTIME_REDIS_URL or redis_url "
            "in the config, and no embedded server is running (start one with "
            "'agent-runtime up' in another terminal)"
        )
    return use_url(args, url)


def configured_url(args: Args, pipeline: Pipeline | None) -> str | None:
    """--redis-url, else AGENT_RUNTIME_REDIS_URL, else the config's ``redis_url`` (checked)."""
    url = getattr(args, "redis_url", None) or os.environ.get("AGENT_RUNTIME_REDIS_URL")
    if not url and pipeline is not None:
        url = pipeline.config.redis_url
    if url and pipeline is not None:
        url = with_config_tls(url, pipeline)
    return use_url(args, url) if url else None


def with_config_tls(url: str, pipeline: Pipeline) -> str:
    """``url`` with the config's ``redis_tls`` settings (paths relative to the config file)
    wherever neither the URL nor the environment gives one (agent_runtime/transport/tls.py)."""
    tls = pipeline.config.redis_tls
    base = pipeline.source.parent if pipeline.source is not None else Path.cwd()

    def path(value: str | None) -> str | None:
        return str(base / value) if value else None

    settings = TlsSettings(
        path(tls.ca_file), path(tls.cert_file), path(tls.key_file), tls.check_hostname
    )
    return with_settings(url, settings)


def use_url(args: Args, url: str) -> str:
    """Check ``url`` (exit 2 when it cannot be a Redis URL) and remember it for the error
    line of a failure (cli.main names the URL, password masked)."""
    check_url(url)
    args.target_url = url
    return url


def check_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in URL_SCHEMES:
        raise UsageError(
            f"{mask_url(url)!r} is not a Redis URL: the scheme must be one of "
            f"{', '.join(s + '://' for s in URL_SCHEMES)}"
        )
    if scheme == "unix":
        return
    try:
        urlsplit(f"redis://{rest}").port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UsageError(f"{mask_url(url)}: bad port ({exc})") from None


def connect_timeout() -> float:
    value = os.environ.get("AGENT_RUNTIME_CONNECT_TIMEOUT", "")
    try:
        seconds = float(value) if value else DEFAULT_CONNECT_TIMEOUT
    except ValueError:
        raise UsageError(f"AGENT_RUNTIME_CONNECT_TIMEOUT={value!r} is not a number") from None
    if not 0 < seconds <= 3600:
        raise UsageError("AGENT_RUNTIME_CONNECT_TIMEOUT must be > 0 and <= 3600 seconds")
    return seconds


def open_connection(url: str, **options: Any) -> Connection:
    """A connection for a command (opening it gives up after :func:`connect_timeout`)."""
    return connect(url, socket_connect_timeout=connect_timeout(), **options)


async def ping(url: str) -> None:
    """Fail now (one line, exit 4) if the server cannot be reached, refuses us or does not
    answer within :func:`connect_timeout` seconds, before a command does anything else."""
    reader = RuntimeReader.of(open_connection(url))
    try:
        await answers(reader)
    finally:
        await reader.aclose()


async def answers(reader: RuntimeReader) -> None:
    """:func:`ping` over a connection the caller keeps (and closes)."""
    with anyio.fail_after(connect_timeout()):
        await reader.ping()


@dataclass(frozen=True)
class ServerTools:
    """What the operator commands read and change on the server, over one connection (the
    commands themselves live in agent_runtime/transport/)."""

    reader: RuntimeReader
    traces: TraceLog
    dead_letters: DeadLetterStore


@asynccontextmanager
async def server_tools(url: str, keys: Keys) -> AsyncIterator[ServerTools]:
    """The transport's readers and stores for ``url`` under ``keys``; closed on exit."""
    connection = open_connection(url)
    reader = RuntimeReader.of(connection)
    try:
        yield ServerTools(
            reader, TraceLog.of(connection, keys), DeadLetterStore.of(connection, keys)
        )
    finally:
        await reader.aclose()
