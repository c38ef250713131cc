"""``python``: call an allow-listed Python function by its short name.

The executor config maps names to dotted paths (imported once, through
``agent_runtime.config.registry.import_object``); a step can only name a function on that list. A
function that declares a ``context`` parameter receives the :class:`ToolContext` (sandbox,
idempotency key). The result must be JSON-serialisable.

A synchronous function runs in a child process of its own (agents/executors/isolated.py: forked
from a forkserver started when the tool is built, with the functions' modules imported), so
the tool's ``timeout``, the call policy's attempt timeout and the request's deadline really cut
it: the child is killed, its late result is never read, and the cut is a transient failure
(:class:`TransientToolError`: retried by the call policy, counted by its circuit breaker). A
coroutine function runs in the executor's event loop, where cancellation stops it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import anyio
from pydantic import Field

from agent_runtime.config.registry import import_object
from agents.executors.base import (
    ToolContext,
    ToolError,
    ToolOptions,
    ToolOutput,
    TransientToolError,
    only,
)
from agents.executors.isolated import call_isolated, start

DEFAULT_FUNCTIONS = {
    "word_count": "agents.executors.functions:word_count",
    "sha256": "agents.executors.functions:sha256",
}


class PythonOptions(ToolOptions):
    functions: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FUNCTIONS),
        description="short name -> 'package.module:function'",
    )
    allowed_modules: list[str] = Field(
        default_factory=list, description="module prefixes beyond 'agents'"
    )
    timeout: float = Field(default=10.0, gt=0, le=3_600)
    max_output_bytes: int = Field(default=16 * 1024, ge=1, le=4 * 1024 * 1024)


class Python:
    """args: ``function`` (a short name), ``kwargs`` (object). Output: the return value."""

    Options = PythonOptions

    def __init__(self, options: PythonOptions) -> None:
        self.options = options
        self.functions: dict[str, Callable[..., Any]] = {}
        for name, path in options.functions.items():
            function = import_object(path, options.allowed_modules)
            if not callable(function):
                raise ToolError(f"python tool: {path!r} is not callable")
            self.functions[name] = function
        start(path.split(":")[0] for path in options.functions.values())

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        only(args, "function", "kwargs")
        name = args.get("function")
        function = self.functions.get(name) if isinstance(name, str) else None
        if function is None:
            raise ToolError(
                f"function {name!r} is not allowed (allowed: {', '.join(sorted(self.functions))})"
            )
        kwargs = args.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ToolError("'kwargs' must be an object")
        if "context" in inspect.signature(function).parameters:
            kwargs = {**kwargs, "context": context}
        try:
            with anyio.fail_after(self.options.timeout):
                if inspect.iscoroutinefunction(function):
                    return _capped(await function(**kwargs), self.options.max_output_bytes)
                value, truncated = await call_isolated(
                    function, kwargs, self.options.max_output_bytes
                )
                return ToolOutput(value, truncated=truncated)
        except TimeoutError:
            raise TransientToolError(
                f"function {name} timed out after {self.options.timeout}s"
            ) from None


def _capped(value: Any, cap: int) -> ToolOutput:
    try:
        data = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"function returned a value that is not JSON: {exc}") from exc
    if len(data) <= cap:
        return ToolOutput(value)
    return ToolOutput(data[:cap], truncated=True)
