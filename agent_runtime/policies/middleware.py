"""An agent type's policies in one worker process, and the worker middleware that applies them.

``Policies`` is built from the agent's ``policies:`` block; the worker CLI passes
``policies.middleware()`` to the Worker and puts the ``Policies`` in
``AgentRuntime.extras["policies"]`` so agents, LLM providers and tools run their calls with
``await runtime.extras["policies"].call("tool.http").run(fn, *args)``.

:class:`PolicyMiddleware` runs each handler under the handler policy, inside a delivery scope
that carries the message deadline (Redis clock) to every nested call policy, and turns the
outcomes into the worker's fate signals:

* deadline passed (before or while handling) -> ``Reject(code="expired")``: dead-lettered
  with reason ``expired``, and the worker writes a timeout reply to the requester;
* an open breaker -> ``Retry(delay=<seconds until it may be probed>)``, not counted as a
  delivery unless the work really failed in this delivery (so a message is never burned by
  an outage it only waited for, while a poison message that trips the breaker still reaches
  the delivery cap); if the breaker stays open past the deadline -> expired at once;
* an error carrying ``retry_after`` (rate limits) -> ``Retry(delay=retry_after)``;
* anything else propagates: the worker retries with backoff and dead-letters at the cap.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from agent_runtime.agent import MessageContext
from agent_runtime.errors import BreakerOpen, DeadlineExceeded, HandlerControl, Reject, Retry
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


class PolicyMiddleware:
    """Worker middleware: the handler policy, the deadline, breaker-open delays."""

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
            raise Reject(f"deadline {ctx.message.deadline} passed before handling", code="expired")
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
        except BreakerOpen as exc:
            raise _breaker_delay(exc, scope) from exc
        except Exception as exc:
            fate = _fate(exc, scope)
            if fate is exc:
                raise
            raise fate from exc
        finally:
            SCOPE.reset(token)
        if stats is not None and stats.attempts > 1:
            ctx.log.info("handler_succeeded_after_retries", attempts=stats.attempts)


async def _attempt(ctx: MessageContext, call_next: Handler) -> None:
    ctx.clear_outputs()  # a retried attempt starts with no queued outputs
    await call_next(ctx)


def _breaker_delay(exc: BreakerOpen, scope: DeliveryScope) -> HandlerControl:
    left = scope.remaining()
    if left is not None and left <= exc.remaining:
        return Reject(
            f"circuit breaker {exc.name!r} stays {exc.state} past the deadline", code="expired"
        )
    delay = exc.remaining + random.uniform(0, min(exc.remaining * 0.1, 0.5))  # noqa: S311
    return Retry(f"breaker_open: {exc.name} is {exc.state}", delay=delay, count=scope.failures > 0)


def _fate(exc: Exception, scope: DeliveryScope) -> Exception:
    if isinstance(exc, DeadlineExceeded) or scope.expired():
        return Reject(f"deadline passed while handling ({type(exc).__name__})", code="expired")
    after = getattr(exc, "retry_after", None)
    if isinstance(after, int | float) and after > 0:
        return Retry(f"{type(exc).__name__}: retry after {after}s", delay=float(after))
    return exc
