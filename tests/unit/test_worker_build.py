"""The composition root (agent_runtime/worker/build.py): a worker signs like the Client
whenever a signing key exists, and its agent gets the typed services."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from agent_runtime.codec import FIELD_SIGNATURE
from agent_runtime.errors import ConfigError, DecodeError
from agent_runtime.observability.redaction import Redactor
from agent_runtime.policies import Policies
from agent_runtime.signing import KEYS_FILE_ENV
from agent_runtime.worker.build import build_worker
from agent_runtime.worker.loop import Worker
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.agents import echo_sink_pipeline

KEY_ENV = "AGENT_RUNTIME_SIGNING_KEY"
STREAM = "t:inbox:echo"
NO_SERVER = Redis(port=9)  # a client is needed to build a worker; these tests send no command


def message() -> AgentMessage:
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload=UserRequest(text="hi").model_dump(mode="json"),
        timestamp=utcnow(),
    )


def test_workers_sign_and_verify_whenever_a_key_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "a-signing-key-of-16+")
    pipeline = echo_sink_pipeline("t")
    built = build_worker(pipeline, "echo", NO_SERVER, consumer="echo-0").worker
    plain = Worker(pipeline, "echo", NO_SERVER, consumer="echo-1")  # its own default codec
    for worker in (built, plain):
        fields = worker.codec.encode(message(), STREAM)
        assert FIELD_SIGNATURE in fields
        unsigned = {k: v for k, v in fields.items() if k != FIELD_SIGNATURE}
        with pytest.raises(DecodeError):
            worker.codec.decode(unsigned, STREAM)  # an unsigned entry is refused
    monkeypatch.setenv(KEY_ENV, "another-key-of-16+++")
    with pytest.raises(DecodeError):
        pipeline.codec("echo").decode(built.codec.encode(message(), STREAM), STREAM)


def test_signing_is_on_by_default_and_needs_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No key variable, no key file: building a codec fails with a one-line ConfigError that
    says how to get a key; only an explicit ``signing: off`` writes unsigned entries."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEYS_FILE_ENV, str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="agent-runtime keys init"):
        echo_sink_pipeline("t").codec("echo")
    codec = echo_sink_pipeline("t", signing="off").codec("echo")
    assert FIELD_SIGNATURE not in codec.encode(message(), STREAM)


def test_the_agent_gets_typed_services() -> None:
    built = build_worker(echo_sink_pipeline("t"), "echo", NO_SERVER, consumer="echo-0")
    runtime = built.worker.runtime
    assert isinstance(runtime.policies, Policies) and runtime.policies is built.policies
    assert isinstance(runtime.redactor, Redactor)
    assert runtime.metrics is None and runtime.llm is None  # metrics off, configured LLM
