"""The only code that talks to Redis."""

from agent_runtime.transport.connect import Connection, connect, redact_url
from agent_runtime.transport.streams import Commit, DeadLetter, Entry, StreamBus, original_fields

__all__ = [
    "Commit",
    "Connection",
    "DeadLetter",
    "Entry",
    "StreamBus",
    "connect",
    "original_fields",
    "redact_url",
]
