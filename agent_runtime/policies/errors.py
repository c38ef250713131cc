"""Which errors a policy retries or counts as a breaker failure.

Names in ``retry_on`` / ``failure_on`` are families or dotted exception paths:

* ``transient``: timeouts, connection errors (builtin, redis-py, httpx transport errors),
  HTTP-ish errors whose ``status_code``/``status`` is 408, 425, 429 or 5xx, and any error with a
  boolean ``transient`` attribute set to True (the LLM error tree: ``LLMUnavailable``,
  ``LLMRateLimited``). An error whose ``transient`` attribute is False is never transient.
* ``timeout``: ``TimeoutError`` (what anyio cancel-scope timeouts raise) and redis timeouts.
* ``connection``: ``ConnectionError`` and redis connection errors.
* ``any``: every ``Exception``.

Never matched, whatever the list says: the handler's control signals (Retry, Reject, Skip),
an open breaker, an exceeded deadline, and cancellation (not an ``Exception``).

This module is also the one place that decides whether a failure is *permanent* (the same
input fails the same way again: dead-letter it on its first delivery) or *transient* (back off
and retry): :func:`classify`. Redis errors are classified by their error code
(agent_runtime/transport/errors.py :func:`redis_error_kind`); ``infrastructure`` transient
errors (the Redis server unreachable, out of memory, loading, busy) are retried without
counting a delivery, so an outage never burns a message's deliveries -- its deadline bounds
the wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import ValidationError

from agent_runtime.config.registry import import_object
from agent_runtime.errors import (
    BreakerOpen,
    BudgetExceeded,
    ConfigError,
    DeadlineExceeded,
    DecodeError,
    HandlerControl,
    LLMRequestError,
    Reject,
    RoutingError,
)
from agent_runtime.policies.config import PolicySet, PolicySpec
from agent_runtime.transport.errors import CONNECTION, TIMEOUTS, Kind, redis_error_kind

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_NEVER = (HandlerControl, BreakerOpen, DeadlineExceeded)
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, *TIMEOUTS)
_CONNECTION: tuple[type[BaseException], ...] = (ConnectionError, *CONNECTION)
_EXHAUSTED = "_agent_runtime_retries_exhausted"

Matcher = Callable[[BaseException], bool]


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, _TIMEOUTS)


def is_connection(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION) or _httpx_transport(exc)


def is_transient(exc: BaseException) -> bool:
    kind = redis_error_kind(exc)
    if kind is not None:
        return kind != "permanent"
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if is_timeout(exc) or is_connection(exc):
        return True
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    return isinstance(status, int) and (status in TRANSIENT_STATUS or 500 <= status < 600)


def _httpx_transport(exc: BaseException) -> bool:
    """httpx's TransportError (connect/read/write/pool errors) without importing httpx."""
    return any(
        cls.__name__ == "TransportError" and cls.__module__.startswith("httpx")
        for cls in type(exc).__mro__
    )


#: Error types whose every instance is permanent: the same input fails again the same way.
PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValidationError,  # a payload or model over a field limit, a wrong type
    ConfigError,
    DecodeError,
    Reject,
    RoutingError,
    LLMRequestError,  # the provider refused the request: fix the request or the config
    BudgetExceeded,
    DeadlineExceeded,
    ValueError,  # a bad argument: a URL with a bad port, a malformed number, bad JSON
    TypeError,
    UnicodeError,
)


def classify(exc: BaseException, permanent: tuple[type[BaseException], ...] = ()) -> Kind:
    """Whether ``exc`` is permanent, transient, or infrastructure (transient, and not the
    message's fault: retried without counting a delivery). ``permanent``: an agent's own
    permanent error types (``Agent.permanent_errors``). Errors this module does not know are
    transient (retried with backoff up to the delivery cap), as are errors whose
    ``transient`` attribute is True; an explicit ``transient = False`` is permanent."""
    if isinstance(exc, BreakerOpen):
        return "transient"
    kind = redis_error_kind(exc)
    if kind is not None:
        return kind
    if isinstance(exc, PERMANENT_TYPES) or (permanent and isinstance(exc, permanent)):
        return "permanent"
    flag = getattr(exc, "transient", None)
    if flag is False:
        return "permanent"
    return "transient"


_FAMILIES: dict[str, Matcher] = {
    "transient": is_transient,
    "timeout": is_timeout,
    "connection": is_connection,
    "any": lambda exc: True,
}


def error_matcher(names: Iterable[str], allowed_modules: Iterable[str] = ()) -> Matcher:
    """A predicate for ``names`` (families or dotted exception paths; paths are imported only
    from the allow-list, plus ``agent_runtime.errors``)."""
    allowed = ("agent_runtime.errors", *allowed_modules)
    tests: list[Matcher] = []
    classes: list[type[BaseException]] = []
    for name in names:
        if name in _FAMILIES:
            tests.append(_FAMILIES[name])
            continue
        cls = import_object(name, allowed)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise ConfigError(f"{name!r} is not an exception class")
        classes.append(cls)
    class_tuple = tuple(classes)

    def matches(exc: BaseException) -> bool:
        if not isinstance(exc, Exception) or isinstance(exc, _NEVER):
            return False
        return isinstance(exc, class_tuple) or any(test(exc) for test in tests)

    return matches


def mark_exhausted(exc: BaseException) -> None:
    """Tag an error a policy already retried, so an enclosing policy does not retry it again
    (no retry amplification: 3 call attempts x 3 handler attempts)."""
    try:
        setattr(exc, _EXHAUSTED, True)
    except AttributeError:  # __slots__ exceptions: the outer policy may retry once more
        pass


def is_exhausted(exc: BaseException) -> bool:
    return bool(getattr(exc, _EXHAUSTED, False))


def policy_problems(where: str, policy_set: PolicySet, allowed_modules: Iterable[str]) -> list[str]:
    """Error paths of an agent's policies that cannot be imported (for ``validate``)."""
    specs: dict[str, PolicySpec] = {where: policy_set}
    specs.update({f"{where}.calls.{name}": spec for name, spec in policy_set.calls.items()})
    problems = []
    for path, spec in specs.items():
        lists = [("retry.retry_on", spec.retry.retry_on)]
        if spec.breaker is not None:
            lists.append(("breaker.failure_on", spec.breaker.failure_on))
        for key, names in lists:
            try:
                error_matcher(names, allowed_modules)
            except ConfigError as exc:
                problems.append(f"{path}.{key}: {exc}")
    return problems
