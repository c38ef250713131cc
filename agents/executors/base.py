"""What a tool is: a class with an ``Options`` model, built once per executor process, whose
``run(args, context)`` does one step.

A tool raises :class:`ToolError` for a failure the user should see (bad arguments, a command
that exited non-zero, a host not on the list) and :class:`TransientToolError` for one a retry
may fix (connection refused, 5xx). Everything a tool returns must be JSON-serialisable.

Tools are named by dotted path in the executor's config (``tools:``) and imported only through
``agent_runtime.config.registry.import_object``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from agent_runtime.errors import AgentRuntimeError


class ToolError(AgentRuntimeError):
    """The step failed; ``str(error)`` is shown to the user. Not retried, and not a failure of
    the dependency for a circuit breaker (the policies' ``transient`` flag)."""

    transient: ClassVar[bool] = False


class TransientToolError(ToolError):
    """The step failed in a way a later attempt may not: retried by the call policy, counted
    by its circuit breaker."""

    transient: ClassVar[bool] = True


class ToolOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool knows about the step it runs."""

    correlation_id: str
    step_id: str
    idempotency_key: str  # f"{correlation_id}:{step_id}": the same step never acts twice
    sandbox: Path  # resolved; file tools and shell cwd stay inside it
    deadline: datetime | None = None


@dataclass(slots=True)
class ToolOutput:
    output: Any
    truncated: bool = False
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Tool(Protocol):
    Options: ClassVar[type[ToolOptions]]

    def __init__(self, options: Any) -> None: ...

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput: ...


DEFAULT_DENY_GLOBS = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    ".git",
    ".ssh",
    ".netrc",
    "*.sqlite",
    "*secret*",
)


def sandboxed(
    sandbox: Path, relative: object, *, deny_globs: tuple[str, ...] | list[str] = DEFAULT_DENY_GLOBS
) -> Path:
    """``relative`` resolved inside ``sandbox`` (symlinks followed), or a ToolError."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ToolError("'path' must be a non-empty string")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ToolError(
            f"absolute paths are not allowed: {relative!r} (paths are relative to the sandbox)"
        )
    resolved = (sandbox / candidate).resolve()
    if resolved != sandbox and sandbox not in resolved.parents:
        raise ToolError(f"{relative!r} is outside the sandbox")
    for part in resolved.relative_to(sandbox).parts:
        if any(fnmatch.fnmatch(part.lower(), g) for g in deny_globs):
            raise ToolError(f"{relative!r} matches a denied name pattern")
    return resolved


def require(args: dict[str, Any], name: str, kind: type) -> Any:
    value = args.get(name)
    if not isinstance(value, kind):
        raise ToolError(f"argument {name!r} must be a {kind.__name__}")
    return value


def only(args: dict[str, Any], *names: str) -> None:
    unknown = sorted(set(args) - set(names))
    if unknown:
        raise ToolError(f"unknown arguments {unknown}; this tool takes {sorted(names)}")
