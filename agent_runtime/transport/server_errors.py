"""The Redis client's exception classes, for code outside ``transport/`` that must tell one
server failure from another (the CLI's one-line diagnoses in cli/failures.py) without
importing ``redis`` itself: only the transport depends on the client library."""

from __future__ import annotations

from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as ServerConnectionError
from redis.exceptions import TimeoutError as ServerTimeoutError

__all__ = [
    "AuthenticationError",
    "InvalidResponse",
    "RedisClusterException",
    "RedisError",
    "ResponseError",
    "ServerConnectionError",
    "ServerTimeoutError",
]
