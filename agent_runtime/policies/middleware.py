"""An agent type's policies in one worker process, and the worker middleware that applies them.

``Policies`` is built from the agent's ``policies:`` block; the composition root
(agent_runtime/worker/build.py) passes ``policies.middleware()`` to the Worker and the
``Policies`` to the agent (``AgentRuntime.policies``), so agents, LLM providers and tools run
their calls with ``await runtime.policies.call("tool.http").run(fn, *args)``.

:class:`PolicyMiddleware` runs each handler under the handler policy, inside a delivery scope
that carries the message deadline (Redis clock) to every nested call policy. It decides no
fates: when the handler does not succeed it raises :class:`HandlerFailed` with the facts the
worker's fate function needs (the error, whether the work really failed in this delivery or an
open breaker only refused it, the seconds left before the deadline); the worker's
``fate_of`` (agent_runtime/worker/fate.py) turns them into expired / breaker-open delay /
retry_after / backoff. The handler's own signals (Retry, Reject, Skip) pass through as raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from agent_runtime.agent import MessageContext
from agent_runtime.errors import AgentRuntimeError, BreakerOpen, HandlerControl
from agent_runtime.policies.breaker import BreakerListener, SharedBreaker
from agent_runtime.policies.clock import SCOPE, DeliveryScope, RedisClock
from agent_runtime.policies.config import PolicySet, PolicySpec
from agent_runtime.policies.errors import error_matcher
from agent_runtime.policies.runner import CallStats, Policy
from agent_runtime.transport.breaker_scripts import RedisBreakers
from agent_runtime.transport.clock import RedisTime
from agent_runtime.transport.keys import Keys

Handler = Callable[[MessageContext], Awaitable[None]]


class Policies:
    """Builds and caches the :class:`Policy` objects of one agent type in one process."""

    def __init__(
        self,
        agent: str,
        policy_set: PolicySet,
        redis: Any,
        keys: Keys,
        *,
        allowed_modules: Iterable[str] = (),
        listeners: Sequence[BreakerListener] = (),
    ) -> None:
        self.agent = agent
        self.policy_set = policy_set
        self.redis = redis
        self.keys = keys
        self.allowed_modules = tuple(allowed_modules)
        self.listeners = list(listeners)
        self.clock = RedisClock(RedisTime(redis))
        self._breaker_store: RedisBreakers | None = None  # made with the first breaker
        self._breakers: dict[str, SharedBreaker] = {}
        self._calls: dict[str, Policy] = {}
        self.handler = self._build(f"agent.{agent}", policy_set)

    @classmethod
    def for_agent(
        cls, pipeline: Any, agent: str, redis: Any, listeners: Sequence[BreakerListener] = ()
    ) -> Policies:
        config = pipeline.config
        return cls(
            agent,
            config.agents[agent].policies,
            redis,
            config.keys,
            allowed_modules=config.allowed_modules,
            listeners=listeners,
        )

    def call(self, name: str) -> Policy:
        """The policy of call ``name`` (``calls.NAME`` in the config, else DEFAULT_CALL)."""
        policy = self._calls.get(name)
        if policy is None:
            policy = self._calls[name] = self._build(name, self.policy_set.for_call(name))
        return policy

    def breaker(self, name: str) -> SharedBreaker | None:
        """A breaker this process has built (by breaker name)."""
        return self._breakers.get(name)

    def middleware(self) -> PolicyMiddleware:
        return PolicyMiddleware(self.handler, self.clock)

    def check(self) -> None:
        """Build every configured policy now, so bad error paths fail at start-up."""
        for name in self.policy_set.calls:
            self.call(name)

    def _store(self) -> RedisBreakers:
        if self._breaker_store is None:
            self._breaker_store = RedisBreakers(self.redis)
        return self._breaker_store

    def _build(self, name: str, spec: PolicySpec) -> Policy:
        retryable = error_matcher(spec.retry.retry_on, self.allowed_modules)
        breaker = None
        if spec.breaker is not None and spec.breaker.enabled:
            breaker_name = spec.breaker.name or name
            breaker = self._breakers.get(breaker_name)
            if breaker is None:
                breaker = self._breakers[breaker_name] = SharedBreaker(
                    breaker_name,
                    spec.breaker,
                    self._store(),
                    self.keys,
                    counts=error_matcher(spec.breaker.failure_on, self.allowed_modules),
                    listeners=self.listeners,
                    attempt_timeout=spec.timeout.attempt,
                )
        return Policy(name, spec, retryable=retryable, breaker=breaker)


class HandlerFailed(AgentRuntimeError):
    """PolicyMiddleware's report of a delivery that did not succeed: the ``error`` (None: the
    deadline passed before handling), ``failed`` (the work really ran and failed in this
    delivery; an open breaker's refusals are not failures) and ``left`` (seconds before the
    message deadline when it ended; None: no deadline). Raised ``from`` the error; the worker
    unwraps it and decides the fate (agent_runtime/worker/fate.py)."""

    def __init__(self, error: Exception | None, *, failed: bool, left: float | None) -> None:
        super().__init__(repr(error) if error is not None else "deadline passed before handling")
        self.error = error
        self.failed = failed
        self.left = left


class PolicyMiddleware:
    """Worker middleware: runs the handler under the handler policy and the delivery's
    deadline, and reports what it saw (:class:`HandlerFailed`); it decides no fates."""

    def __init__(self, policy: Policy, clock: RedisClock) -> None:
        self.policy = policy
        self.clock = clock
        spec = policy.spec  # nothing to do around the handler but the deadline: lean path
        self._plain = (
            spec.retry.attempts == 1
            and policy.breaker is None
            and spec.timeout.attempt is None
            and spec.timeout.total is None
        )

    async def handle(self, ctx: MessageContext, call_next: Handler) -> None:
        message = ctx.message
        deadline = None if message.deadline is None else await self.clock.deadline_of(message)
        scope = DeliveryScope(deadline)
        if deadline is not None and scope.expired():
            raise HandlerFailed(None, failed=False, left=scope.remaining())
        stats = None
        token = SCOPE.set(scope)  # the delivery every nested call policy sees
        try:
            if self._plain and deadline is None:
                await call_next(ctx)  # nothing to apply around it: no attempt bookkeeping
            else:
                stats = CallStats()
                await self.policy.run(_attempt, ctx, call_next, stats=stats)
        except HandlerControl:
            raise
        except Exception as exc:
            failed = scope.failures > 0 or not isinstance(exc, BreakerOpen)
            raise HandlerFailed(exc, failed=failed, left=scope.remaining()) from exc
        finally:
            SCOPE.reset(token)
        if stats is not None and stats.attempts > 1:
            ctx.log.info("handler_succeeded_after_retries", attempts=stats.attempts)


async def _attempt(ctx: MessageContext, call_next: Handler) -> None:
    ctx.clear_outputs()  # a retried attempt starts with no queued outputs
    await call_next(ctx)
