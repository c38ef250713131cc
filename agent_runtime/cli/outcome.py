"""A request's terminal reply, printed the same way by ``run`` and ``send --wait``, and the
exit status it means (README.md, "Exit status").

* a reply that reports its request's outcome itself (:class:`OutcomeReport`: an ``ok``
  verdict and a ``render_text()``, e.g. the default pipeline's ``report.created``): its text;
  0 when ok, 1 otherwise;
* the runtime's ``request.failed``: one line; 3 when the request's deadline passed (status
  ``timeout``, or code ``expired``/``no_consumer``), 1 otherwise;
* any other terminal reply of a custom pipeline: its fields; 0.

``--json`` prints the reply as one JSON object instead (see :data:`JsonShape`).
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, TextIO, runtime_checkable

from agent_runtime.cli.failures import EXIT_NOT_OK, EXIT_OK, EXIT_TIMEOUT
from agent_runtime.codec import Decoded
from protocols.core import RequestFailed

#: ``send --json``: the envelope's fields with the payload nested; ``run --json``: the
#: payload's fields (and its ``message_type``, except for an :class:`OutcomeReport`: exactly
#: the report, loadable with its own model).
JsonShape = Literal["envelope", "payload"]
#: ``request.failed`` codes that mean the deadline passed (the fleet's deadline sweep).
TIMEOUT_CODES = frozenset({"expired", "no_consumer"})


@runtime_checkable
class OutcomeReport(Protocol):
    """A terminal payload that says whether its request succeeded and how it reads as text.
    The CLI knows no pipeline's payload models (the library never imports them): any reply
    with these two members is printed and judged this way."""

    @property
    def ok(self) -> bool: ...

    def render_text(self) -> str: ...


def exit_status(payload: Any) -> int:
    if isinstance(payload, RequestFailed):
        timed_out = payload.status == "timeout" or getattr(payload, "code", "") in TIMEOUT_CODES
        return EXIT_TIMEOUT if timed_out else EXIT_NOT_OK
    if isinstance(payload, OutcomeReport):
        return EXIT_OK if payload.ok else EXIT_NOT_OK
    return EXIT_OK


def print_reply(reply: Decoded, out: TextIO, *, as_json: JsonShape | None = None) -> int:
    """Print ``reply`` (as text, or as JSON of the given shape); its exit status."""
    payload = reply.payload
    if as_json == "envelope":
        print(json.dumps(reply_json(reply), indent=2), file=out)
    elif as_json == "payload":
        data = payload.model_dump(mode="json")
        if not isinstance(payload, OutcomeReport):  # a report stays loadable with its model
            data = {"message_type": reply.message.message_type, **data}
        print(json.dumps(data, indent=2), file=out)
    elif isinstance(payload, OutcomeReport):
        print(payload.render_text(), file=out)
    elif isinstance(payload, RequestFailed):
        print(failure_line(payload), file=out)
    else:
        print(reply_text(reply), file=out)
    return exit_status(payload)


def failure_line(failed: RequestFailed) -> str:
    stage = f" ({failed.stage})" if failed.stage else ""
    code = getattr(failed, "code", "")
    return f"request {failed.status}: {failed.agent}{stage}: {failed.reason}" + (
        f" [{code}]" if code else ""
    )


def reply_json(reply: Decoded) -> dict[str, Any]:
    message = reply.message
    return {
        "correlation_id": str(message.correlation_id),
        "message_type": message.message_type,
        "schema_version": message.schema_version,
        "from_agent": message.from_agent,
        "payload": reply.payload.model_dump(mode="json"),
    }


def reply_text(reply: Decoded) -> str:
    lines = [f"reply: {reply.message.message_type} from {reply.message.from_agent}"]
    for key, value in reply.payload.model_dump(mode="json").items():
        shown = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
