"""Run one synchronous tool function in a child process of its own, so a timeout really cuts it.

A thread cannot be stopped: a hanging function awaited in a worker thread kept its step (and
the handler) waiting past every timeout, and its late result counted as a success, so the
circuit breaker never opened. Here each call runs in a new process forked from a
``multiprocessing`` *forkserver* (started once per executor process, with the tool's function
modules imported in it, so a call starts in milliseconds and never forks the multi-threaded
worker itself). The answer comes back as JSON on a pipe. When the call is cut (the tool's
timeout, the call policy's attempt timeout, the request's deadline), the child is killed:
nothing of the call keeps running and no late result is ever read. The caller turns the cut
into a transient timeout failure.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from agents.executors.base import ToolError, TransientToolError

_CONTEXT = multiprocessing.get_context("forkserver")
_MAX_ERROR = 2000
_started = False


def start(modules: Iterable[str]) -> None:
    """Start the forkserver with ``modules`` imported in it (the first call only: later
    calls' modules are imported by each child). Blocks about as long as a Python start-up:
    call it when the tool is built, not per call."""
    global _started
    if _started:
        return
    _CONTEXT.set_forkserver_preload(["agents.executors.isolated", *modules])
    process = _CONTEXT.Process(target=_noop)
    process.start()
    process.join()
    _started = True


async def call_isolated(
    function: Callable[..., Any], kwargs: dict[str, Any], max_bytes: int
) -> tuple[Any, bool]:
    """``(value, truncated)`` of ``function(**kwargs)`` run in a child process; the value is
    its JSON text cut at ``max_bytes`` when truncated. A :class:`ToolError` (or
    :class:`TransientToolError`) of the function is raised here as such; any other error of
    it becomes a :class:`ToolError` naming it. Cancelling the call kills the child."""
    reader, writer = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(function, kwargs, max_bytes, writer))
    try:
        process.start()
        writer.close()  # the child holds the only writing end: EOF when it ends
        await anyio.wait_readable(reader.fileno())
        try:
            data = reader.recv_bytes()
        except EOFError:
            await anyio.to_thread.run_sync(process.join, 5)
            raise ToolError(
                f"function {getattr(function, '__name__', function)} ended without an "
                f"answer (exit {process.exitcode})"
            ) from None
    finally:
        if process.is_alive():
            process.kill()  # cut: nothing of the call keeps running
        with anyio.CancelScope(shield=True):  # reap it without blocking the event loop
            await anyio.to_thread.run_sync(process.join, 5)
        reader.close()
    return _answer(json.loads(data))


def _answer(answer: dict[str, Any]) -> tuple[Any, bool]:
    if "error" in answer:
        kind, text = answer.get("kind"), str(answer["error"])[:_MAX_ERROR]
        raise TransientToolError(text) if kind == "transient" else ToolError(text)
    return answer.get("value"), bool(answer.get("truncated"))


# ------------------------------------------------------------------ the child
def _noop() -> None:
    pass


def _child(function: Callable[..., Any], kwargs: dict[str, Any], cap: int, writer: Any) -> None:
    try:
        data = _json(function(**kwargs))
    except TransientToolError as exc:
        answer: dict[str, Any] = {"error": str(exc), "kind": "transient"}
    except ToolError as exc:
        answer = {"error": str(exc), "kind": "tool"}
    except Exception as exc:  # reported to the step: never a crash of the worker
        answer = {"error": f"function raised {type(exc).__name__}: {exc}", "kind": "error"}
    else:
        answer = (
            {"value": json.loads(data)}
            if len(data) <= cap
            else {
                "value": data[:cap],
                "truncated": True,
            }
        )
    writer.send_bytes(json.dumps(answer).encode())
    writer.close()


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"function returned a value that is not JSON: {exc}") from exc
