"""Create the Redis client from a URL: ``redis://``, ``rediss://``, ``unix://`` or, for Redis
Cluster, ``redis+cluster://`` / ``rediss+cluster://`` (any node of the cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from agent_runtime.transport.fastpack import use_hiredis_packing

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True)
class Connection:
    redis: Any  # Redis | RedisCluster: same command surface for what the runtime uses
    cluster: bool
    url: str


def connect(url: str, **kwargs: Any) -> Connection:
    """A client for ``url``; bytes in, bytes out (``decode_responses=False``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{redact_url(url)!r} is not a Redis URL (redis://, rediss://, unix://, "
            "redis+cluster://)"
        )
    options: dict[str, Any] = {"health_check_interval": 30, **kwargs}
    if scheme in CLUSTER_SCHEMES:
        client: Any = RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
        return Connection(client, True, url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
    client = Redis.from_url(url, **options)
    use_hiredis_packing(client)
    return Connection(client, False, url)


def redact_url(url: str) -> str:
    """``url`` without its password (safe to log or print)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    creds, _, host = rest.partition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
