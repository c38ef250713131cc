"""Retry (tenacity), timeout (anyio) and circuit-breaker (pybreaker) policies."""

from agent_runtime.policies.config import BreakerPolicy, PolicySet, RetryPolicy, TimeoutPolicy

__all__ = ["BreakerPolicy", "PolicySet", "RetryPolicy", "TimeoutPolicy"]
