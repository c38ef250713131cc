"""The composition root (agent_runtime/worker/build.py): a worker signs like the Client
whenever a signing key exists, and its agent gets the typed services."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from agent_runtime.codec import FIELD_SIGNATURE
from agent_runtime.errors import DecodeError
from agent_runtime.observability.redaction import Redactor
from agent_runtime.policies import Policies
from agent_runtime.worker.build import build_worker
from agent_runtime.worker.loop import Worker
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.agents import echo_sink_pipeline

KEY_ENV = "AGENT_RUNTIME_SIGNING_KEY"
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
    monkeypatch.setenv(KEY_ENV, "a-signing-key")
    pipeline = echo_sink_pipeline("t")
    built = build_worker(pipeline, "echo", NO_SERVER, consumer="echo-0").worker
    plain = Worker(pipeline, "echo", NO_SERVER, consumer="echo-1")  # its own default codec
    for worker in (built, plain):
        fields = worker.codec.encode(message())
        assert FIELD_SIGNATURE in fields
        unsigned = {k: v for k, v in fields.items() if k != FIELD_SIGNATURE}
        with pytest.raises(DecodeError):
            worker.codec.decode(unsigned)  # an unsigned entry is refused
    monkeypatch.setenv(KEY_ENV, "another-key")
    with pytest.raises(DecodeError):
        pipeline.codec("echo").decode(built.codec.encode(message()))


def test_without_a_key_nothing_is_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    codec = echo_sink_pipeline("t").codec("echo")
    assert FIELD_SIGNATURE not in codec.encode(message())


def test_the_agent_gets_typed_services() -> None:
    built = build_worker(echo_sink_pipeline("t"), "echo", NO_SERVER, consumer="echo-0")
    runtime = built.worker.runtime
    assert isinstance(runtime.policies, Policies) and runtime.policies is built.policies
    assert isinstance(runtime.redactor, Redactor)
    assert runtime.metrics is None and runtime.llm is None  # metrics off, configured LLM
