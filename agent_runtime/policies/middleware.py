"""An agent type's policies in one worker process.

``Policies`` is built from the agent's ``policies:`` block; the composition root
(agent_runtime/worker/build.py) wraps the handler in ``Policies.handler`` (the worker's
``PolicyMiddleware``, agent_runtime/worker/delivery.py) and gives the ``Policies`` to the agent
(``AgentRuntime.policies``), so agents, LLM providers and tools run their calls with
``await runtime.policies.call("tool.http").run(fn, *args)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent_runtime.config.limits import AccountLimits, MessageLimits
from agent_runtime.policies.breaker import BreakerListener, SharedBreaker
from agent_runtime.policies.clock import RedisClock
from agent_runtime.policies.config import PolicySet, PolicySpec
from agent_runtime.policies.errors import error_matcher
from agent_runtime.policies.ratelimit import RateLimiter, RateObserver
from agent_runtime.policies.runner import Policy
from agent_runtime.transport.breaker_scripts import RedisBreakers
from agent_runtime.transport.clock import RedisTime
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.ratelimit import RedisRateLimits


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
        limits: Mapping[str, AccountLimits] | None = None,
        rate_observer: RateObserver | None = None,
        message_limit: MessageLimits | None = None,
    ) -> None:
        self.agent = agent
        self.limits = dict(limits or {})
        self.rate_observer = rate_observer
        self._limiters: dict[str, RateLimiter] = {}
        self.message_limiter = (
            None
            if message_limit is None
            else RateLimiter(
                f"agent.{agent}",
                message_limit,
                RedisRateLimits(redis),
                keys,
                observer=rate_observer,
            )
        )
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
        cls,
        pipeline: Any,
        agent: str,
        redis: Any,
        listeners: Sequence[BreakerListener] = (),
        rate_observer: RateObserver | None = None,
    ) -> Policies:
        config = pipeline.config
        return cls(
            agent,
            config.agents[agent].policies,
            redis,
            config.keys,
            allowed_modules=config.allowed_modules,
            listeners=listeners,
            limits=config.llm.accounts,
            rate_observer=rate_observer,
            message_limit=config.agents[agent].rate_limit,
        )

    def call(self, name: str) -> Policy:
        """The policy of call ``name`` (``calls.NAME`` in the config, else DEFAULT_CALL)."""
        policy = self._calls.get(name)
        if policy is None:
            policy = self._calls[name] = self._build(name, self.policy_set.for_call(name))
        return policy

    def rate_limiter(self, name: str) -> RateLimiter:
        """The fleet rate limit of account ``name`` (``llm.accounts.NAME``; KeyError if
        the pipeline has none of that name)."""
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = RateLimiter(
                name,
                self.limits[name],
                RedisRateLimits(self.redis),
                self.keys,
                observer=self.rate_observer,
            )
        return limiter

    def breaker(self, name: str) -> SharedBreaker | None:
        """A breaker this process has built (by breaker name)."""
        return self._breakers.get(name)

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
