"""Versioned pydantic schemas: the ``AgentMessage`` envelope and the payloads it carries."""

from protocols.base import Payload, SchemaRegistry, UnknownSchema
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, output_id, utcnow

__all__ = [
    "AgentMessage",
    "Payload",
    "SchemaRegistry",
    "UnknownSchema",
    "UserRequest",
    "output_id",
    "utcnow",
]
