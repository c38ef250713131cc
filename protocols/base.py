"""Base class of payload models and the schema registry (message_type, version) -> model."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class Payload(BaseModel):
    """A versioned payload. Subclasses set ``message_type`` and ``schema_version``.

    To keep version N-1 readable, register the N-1 model too and give the N model an
    ``upgrade`` classmethod that turns an N-1 instance into an N instance (the default copies
    the fields both share).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    #: The N-1 model of this type, kept readable (registered together with this one).
    previous: ClassVar[type[Payload] | None] = None
    #: True for payloads that leave the pipeline (replies, reports): no agent consumes them.
    terminal: ClassVar[bool] = False

    @classmethod
    def upgrade(cls, previous: Payload) -> Self:
        return cls.model_validate(previous.model_dump(mode="json"), strict=False)


class UnknownSchema(LookupError):
    """(message_type, version) is not readable by this registry; ``reason`` says which part."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SchemaRegistry:
    """Payload models by message type and version. The newest registered version of a type is
    current; current and current-1 are readable, anything else is an unknown version."""

    def __init__(self, models: Iterable[type[Payload]] = ()) -> None:
        self._models: dict[str, dict[int, type[Payload]]] = {}
        self._current: dict[str, type[Payload]] = {}
        self._fast: dict[tuple[str, int], Callable[[Any], Payload]] = {}
        for model in models:
            self.register(model)

    def register(self, model: type[Payload]) -> type[Payload]:
        if model.previous is not None:
            self.register(model.previous)
        versions = self._models.setdefault(model.message_type, {})
        existing = versions.get(model.schema_version)
        if existing is not None and existing is not model:
            raise ValueError(
                f"{model.message_type} v{model.schema_version} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        versions[model.schema_version] = model
        current = self._current[model.message_type] = versions[max(versions)]
        # (type, current version) -> validator: the common case, one lookup. Measured gain:
        # 5,438 instructions per message, 3.1 % / 3.5 % of the runtime's (traces on / off, idle
        # machine; docs/benchmarks.md "Speed tricks").
        self._fast = {
            key: value for key, value in self._fast.items() if key[0] != model.message_type
        }
        self._fast[(model.message_type, current.schema_version)] = (
            current.__pydantic_validator__.validate_python
        )
        return model

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._models

    def message_types(self) -> list[str]:
        return sorted(self._models)

    def current(self, message_type: str) -> type[Payload]:
        model = self._current.get(message_type)
        if model is None:
            raise UnknownSchema("unknown_type", f"no payload model for {message_type!r}")
        return model

    def parse(self, message_type: str, version: int, data: dict[str, Any]) -> Payload:
        """Validate ``data`` and return an instance of the *current* model of the type.

        Raises :class:`UnknownSchema` or pydantic's ``ValidationError``."""
        fast = self._fast.get((message_type, version))
        if fast is not None:
            return fast(data)
        current = self.current(message_type)
        if version == current.schema_version:
            return current.model_validate(data)
        previous = self._models[message_type].get(version)
        if previous is None or version != current.schema_version - 1:
            readable = f"v{current.schema_version}" + (
                f" and v{current.schema_version - 1}"
                if current.schema_version - 1 in self._models[message_type]
                else ""
            )
            raise UnknownSchema(
                "unknown_version",
                f"{message_type} v{version} is not readable (this worker reads {readable})",
            )
        return current.upgrade(previous.model_validate(data))


__all__ = ["Payload", "SchemaRegistry", "UnknownSchema", "ValidationError"]
