"""agent-runtime: typed multi-agent pipelines over Redis Streams.

The public API most users need::

    from agent_runtime import Agent, MessageContext, Retry, Reject, Skip
"""

from agent_runtime.agent import Agent, AgentRuntime, MessageContext, NoConfig, Services
from agent_runtime.errors import AgentRuntimeError, ConfigError, Reject, Retry, Skip

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentRuntime",
    "AgentRuntimeError",
    "ConfigError",
    "MessageContext",
    "NoConfig",
    "Reject",
    "Retry",
    "Services",
    "Skip",
    "__version__",
]
