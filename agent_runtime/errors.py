"""The whole exception tree of agent-runtime, one root: :class:`AgentRuntimeError`.

Handlers signal a message's fate by raising:

* :class:`Retry` -- redeliver later (optionally after ``delay`` seconds); counts as a delivery
  unless ``count=False`` (used while a circuit breaker is open).
* :class:`Reject` -- never retry: the message goes to the dead-letter stream with the reason.
* :class:`Skip` -- acknowledge without output (e.g. a message that is no longer relevant).

Any other exception is a failure: it is retried until the delivery cap, then dead-lettered.
"""

from __future__ import annotations

from typing import Any


class AgentRuntimeError(Exception):
    """Root of every error raised by agent-runtime."""


class ConfigError(AgentRuntimeError):
    """The pipeline configuration is invalid (unknown keys, bad class paths, routing holes)."""


class ImportNotAllowedError(ConfigError):
    """A dotted path names a module outside the configured allow-list."""


class EmbeddedServerError(AgentRuntimeError):
    """The embedded Redis/Valkey server could not be found, started or reached."""


class TransportError(AgentRuntimeError):
    """A Redis operation failed in a way the caller must handle."""


class PublishError(TransportError):
    """Some requests of a ``Client.publish_many`` batch were not queued: ``published`` lists
    the envelopes that were (never send those again), ``failed`` the others."""

    def __init__(self, text: str, *, published: list[Any], failed: list[Any]) -> None:
        super().__init__(text)
        self.published = published
        self.failed = failed


class DecodeError(AgentRuntimeError):
    """A stream entry could not be turned into a valid envelope.

    ``reason`` is a short machine-readable code (``oversize``, ``undecodable``, ``invalid``,
    ``unknown_type``, ``unknown_version``, ``bad_signature``); the message is human-readable.
    """

    def __init__(self, reason: str, detail: str, message: object | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        #: The envelope (an ``AgentMessage``) when it was valid and only its payload was not:
        #: its requester can then be told (``request.failed``).
        self.message = message


class RoutingError(AgentRuntimeError):
    """An agent produced a message type that no agent consumes and no route names."""


class HandlerControl(AgentRuntimeError):
    """Base of the control-flow signals a handler may raise."""


class Retry(HandlerControl):
    """Redeliver this message after ``delay`` seconds (``None``: the policy's backoff)."""

    def __init__(
        self, reason: str = "retry requested", *, delay: float | None = None, count: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.count = count


class Reject(HandlerControl):
    """Dead-letter this message now with ``reason``; it will not be retried."""

    def __init__(self, reason: str, *, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Skip(HandlerControl):
    """Acknowledge this message without producing output."""


class BreakerOpen(AgentRuntimeError):
    """The circuit breaker ``name`` is open (or another caller is probing it): the call was not
    made. ``remaining`` is how many seconds until a call may be tried again."""

    transient = False

    def __init__(self, name: str, remaining: float, state: str = "open") -> None:
        super().__init__(f"circuit breaker {name!r} is {state}; retry in {remaining:.3f}s")
        self.name = name
        self.remaining = remaining
        self.state = state


class DeadlineExceeded(AgentRuntimeError):
    """The message's deadline passed (or would pass) before the work could finish."""

    transient = False


class RequestError(AgentRuntimeError):
    """A client request failed (timeout waiting for the reply, no server, bad input)."""


class RequestTimeout(RequestError):
    """No reply arrived on the request's reply stream within the timeout."""


class LLMError(AgentRuntimeError):
    """An LLM provider call failed; raised by agent_runtime.llm, never a vendor SDK error."""

    #: True when the same call may succeed later (rate limit, outage, timeout).
    transient: bool = False


class LLMOutputError(LLMError):
    """The model answered, but not with valid structured output (bad JSON, schema mismatch,
    refusal, truncated). ``usage`` is what the failed call cost, so it can still be booked."""

    def __init__(self, message: str, *, usage: object | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class LLMRequestError(LLMError):
    """The provider refused the request (4xx other than 408/409/429): fix config, do not retry."""


class LLMUnavailable(LLMError):
    """The provider is unreachable or failing (5xx, connection error, timeout): transient."""

    transient = True


class LLMRateLimited(LLMUnavailable):
    """The provider answered 429; ``retry_after`` is its Retry-After in seconds, if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(AgentRuntimeError):
    """A request spent more than its budget (USD)."""

    def __init__(self, budget_usd: float, spent_usd: float) -> None:
        super().__init__(f"request budget exceeded: spent ${spent_usd:.6f} of ${budget_usd:.6f}")
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
