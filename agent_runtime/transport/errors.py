"""What a Redis error means for a retry: the transport's half of
agent_runtime/policies/errors.py (which knows every other error), so policies/ needs no
redis import.

An error reply of the server about one key or one call (WRONGTYPE, ERR ...) is permanent; a
state of the server (OOM, LOADING, BUSY, TRYAGAIN, cluster changes) and a lost connection or
timeout are infrastructure (retried without counting a delivery). redis-py strips the code of
the errors it maps to classes (``OOM`` -> ``OutOfMemoryError``) and keeps it in
``status_code``.
"""

from __future__ import annotations

from typing import Literal

from redis import exceptions as redis_errors

Kind = Literal["permanent", "transient", "infrastructure"]

#: Error codes (first word of a Redis error reply) that a later try can get past.
REDIS_TRANSIENT_CODES = frozenset(
    {"OOM", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "MOVED", "ASK"}
    | {"NOSCRIPT", "NOREPLICAS", "EXECABORT", "UNBLOCKED"}
)

#: Server states redis-py maps to classes, stripping their code (MASTERDOWN: ClusterDown).
_INFRASTRUCTURE_CLASSES = (
    redis_errors.BusyLoadingError,
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.ExecAbortError,
)
#: Timeouts and connection errors of the client library (besides the builtin ones).
TIMEOUTS: tuple[type[BaseException], ...] = (redis_errors.TimeoutError,)
CONNECTION: tuple[type[BaseException], ...] = (redis_errors.ConnectionError,)


def redis_error_kind(exc: BaseException) -> Kind | None:
    """The kind of a Redis client error, or None when ``exc`` is not one."""
    if isinstance(exc, redis_errors.ResponseError):
        if isinstance(exc, _INFRASTRUCTURE_CLASSES):
            return "infrastructure"
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return "infrastructure" if str(code).upper() in REDIS_TRANSIENT_CODES else "permanent"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return "infrastructure"
    return None
