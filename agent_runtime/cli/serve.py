"""``agent-runtime serve``: the HTTP gateway (REST API, SSE, WebSocket, dashboard) for one
pipeline, served by uvicorn. ``--hash-token`` / ``--new-token`` make token hashes for the
gateway's settings instead of serving."""

from __future__ import annotations

import getpass
import sys

import click

from agent_runtime.cli.common import Args, config_and_redis, load_pipeline, redis_url, runs
from agent_runtime.cli.failures import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "serve",
            callback=runs(run),
            short_help="serve the HTTP gateway: REST API, live events, dashboard",
            help="Serve the HTTP gateway for the pipeline: the /v1 API (OpenAPI docs at "
            "/v1/docs), Server-Sent Events, the /v1/events WebSocket, /healthz, /readyz, "
            "/metrics and the dashboard at /. Stateless: run several behind a load balancer. "
            "Tokens: see docs/gateway.md.",
            params=[
                click.Option(
                    ["--host"],
                    default=DEFAULT_HOST,
                    envvar="AGENT_RUNTIME_GATEWAY_HOST",
                    show_envvar=True,
                    show_default=True,
                    help="address to listen on",
                ),
                click.Option(
                    ["--port"],
                    type=int,
                    default=DEFAULT_PORT,
                    envvar="AGENT_RUNTIME_GATEWAY_PORT",
                    show_envvar=True,
                    show_default=True,
                    help="TCP port",
                ),
                click.Option(
                    ["--gateway-config"],
                    default=None,
                    metavar="FILE",
                    help="gateway settings YAML: tokens, rate limit, body cap, CORS (default: "
                    "$AGENT_RUNTIME_GATEWAY_CONFIG; tokens also from "
                    "$AGENT_RUNTIME_GATEWAY_TOKENS)",
                ),
                click.Option(
                    ["--access-log"],
                    is_flag=True,
                    help="log every HTTP call (method, path, status)",
                ),
                click.Option(
                    ["--hash-token"],
                    is_flag=True,
                    help="read a token from standard input, print its SHA-256 for the "
                    "settings, exit",
                ),
                click.Option(
                    ["--new-token"],
                    is_flag=True,
                    help="print a new random token and its SHA-256 (two lines), exit",
                ),
                *config_and_redis(),
            ],
        )
    )


def run(args: Args) -> int:
    from agent_runtime.gateway.auth import hash_token, new_token

    if args.new_token:
        token = new_token()
        print(token)
        print(hash_token(token))
        return 0
    if args.hash_token:
        token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
        token = token.rstrip("\r\n")
        if not token:
            raise UsageError("no token on standard input")
        print(hash_token(token))
        return 0
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: must be 1-65535")
    return _serve(args)


def _serve(args: Args) -> int:
    import uvicorn

    from agent_runtime.gateway.app import create_app
    from agent_runtime.gateway.settings import load_settings

    settings = load_settings(args.gateway_config)
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    if not settings.tokens:
        print(
            "agent-runtime serve: warning: no API tokens configured: every /v1 call will be "
            "refused (see 'agent-runtime serve --new-token' and docs/gateway.md)",
            file=sys.stderr,
        )
    app = create_app(settings, pipeline=pipeline, redis_url=url)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop=_loop(),
        access_log=args.access_log,
        log_level="info" if args.access_log else "warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    print(f"agent-runtime serve: listening on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.Server(config).run()
    return 0


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
