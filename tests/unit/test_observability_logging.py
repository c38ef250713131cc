"""structlog set-up: JSON lines with bound message context, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from agent_runtime.errors import ConfigError
from agent_runtime.observability.logging import bind_message, configure_logging
from agent_runtime.observability.redaction import Redactor

CANARY = "canary-log-77Hq2w"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_agent_runtime", False):
            root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_bound_message_context(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream, redactor=Redactor())
    log = structlog.get_logger("test")
    with bind_message(
        correlation_id="c1", message_id="m1", causation_id="p1", agent="echo", consumer="echo-h-0"
    ):
        log.info("message_handled", took=3)
    log.info("worker_stopped")
    first, second = lines(stream)
    assert first["event"] == "message_handled" and first["level"] == "info"
    assert {
        k: first[k] for k in ("correlation_id", "message_id", "causation_id", "agent", "consumer")
    } == {
        "correlation_id": "c1",
        "message_id": "m1",
        "causation_id": "p1",
        "agent": "echo",
        "consumer": "echo-h-0",
    }
    assert "timestamp" in first
    assert "correlation_id" not in second  # unbound after the block


def test_secrets_never_reach_the_output(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream, redactor=Redactor((CANARY,)))
    log = structlog.get_logger("test")
    log.warning(
        "call_failed",
        error=f"401 for key {CANARY}",
        api_key="whatever",
        url=f"redis://:{CANARY}@host:6379",
    )
    try:
        raise RuntimeError(f"boom {CANARY}")
    except RuntimeError:
        log.exception("handler_crashed")
    logging.getLogger("redis").error("lost connection to redis://u:%s@h", CANARY)
    text = stream.getvalue()
    assert CANARY not in text and "whatever" not in text
    assert "handler_crashed" in text and "lost connection" in text


def test_level_comes_from_the_environment(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_LOG_LEVEL", "warning")
    configure_logging(json=True, stream=stream, redactor=Redactor())
    log = structlog.get_logger("test")
    log.info("not_shown")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]
    monkeypatch.setenv("AGENT_RUNTIME_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError):
        configure_logging(json=True, stream=stream)


def test_console_format_when_forced(stream: io.StringIO) -> None:
    configure_logging(json=False, stream=stream, redactor=Redactor())
    structlog.get_logger("test").info("worker_started", agent="echo")
    text = stream.getvalue()
    assert "worker_started" in text and "agent" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_lines_logged_in_a_handler_task_carry_its_message_ids(stream: io.StringIO) -> None:
    import asyncio
    import uuid

    from agent_runtime.observability.logging import set_current_message
    from tests.unit.test_observability_metrics import context

    configure_logging(json=True, stream=stream, redactor=Redactor())
    ctx = context()

    async def handler() -> None:
        set_current_message(ctx, "echo-host-0")
        structlog.get_logger("some.library").info("tool_called")

    async def main() -> None:
        await asyncio.get_running_loop().create_task(handler())
        structlog.get_logger("worker").info("outside_the_task")

    asyncio.run(main())
    inside, outside = lines(stream)
    assert inside["correlation_id"] == str(ctx.message.correlation_id)
    assert inside["message_id"] == str(ctx.message.message_id)
    assert (inside["agent"], inside["consumer"]) == ("echo", "echo-host-0")
    assert uuid.UUID(str(inside["message_id"]))
    assert "message_id" not in outside
