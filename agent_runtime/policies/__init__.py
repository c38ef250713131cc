"""Resilience policies: retry (tenacity), timeout (anyio), circuit breaker (pybreaker, state
shared in Redis), message deadlines on the Redis clock. See docs/policies.md."""

from agent_runtime.policies.breaker import BreakerListener, BreakerState, SharedBreaker
from agent_runtime.policies.clock import (
    DeliveryScope,
    RedisClock,
    current_scope,
    delivery_scope,
    remaining,
)
from agent_runtime.policies.config import (
    DEFAULT_CALL,
    BreakerPolicy,
    PolicySet,
    PolicySpec,
    RetryPolicy,
    TimeoutPolicy,
)
from agent_runtime.policies.errors import error_matcher, is_transient
from agent_runtime.policies.middleware import Policies
from agent_runtime.policies.runner import CallStats, Policy

__all__ = [
    "DEFAULT_CALL",
    "BreakerListener",
    "BreakerPolicy",
    "BreakerState",
    "CallStats",
    "DeliveryScope",
    "Policies",
    "Policy",
    "PolicySet",
    "PolicySpec",
    "RedisClock",
    "RetryPolicy",
    "SharedBreaker",
    "TimeoutPolicy",
    "current_scope",
    "delivery_scope",
    "error_matcher",
    "is_transient",
    "remaining",
]
